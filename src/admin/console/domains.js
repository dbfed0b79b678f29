// Domains: the paged list (prefix search, certificate-state filter) and a domain's page (edit,
// certificate upload, renew now, delete). All through the admin API.

import { api, enc, ApiError } from "./api.js";
import { h, notify, time, timeLong, badge, field, showError, clearErrors, every } from "./ui.js";

const PAGE = 50;
/** Cursors of the pages before this one, for "Previous". */
let previous = [];

export async function domains(main, r) {
  const prefix = r.params.get("prefix") || "";
  const state = r.params.get("cert_state") || "";
  const after = r.params.get("after") || "";
  if (!after) previous = [];
  const q = new URLSearchParams({ limit: PAGE });
  if (prefix) q.set("prefix", prefix);
  if (state) q.set("cert_state", state);
  if (after) q.set("after", after);
  const page = await api("GET", `/v1/domains?${q}`);
  const go = (p) => {
    const s = new URLSearchParams();
    for (const [k, v] of Object.entries(p)) if (v) s.set(k, v);
    location.hash = `#/domains${s.toString() ? `?${s}` : ""}`;
  };
  const search = h("input", { type: "search", id: "search", value: prefix, placeholder: "shop.example",
    autocomplete: "off", spellcheck: "false" });
  let debounce;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => go({ prefix: search.value.trim().toLowerCase(), cert_state: state }), 300);
  });
  const filter = h("select", { id: "cert-state" },
    [["", "any"], ["valid", "valid"], ["pending", "pending"], ["renewing", "renewing"], ["failed", "failed"]]
      .map(([v, t]) => h("option", { value: v, selected: v === state }, t)));
  filter.addEventListener("change", () => go({ prefix, cert_state: filter.value }));
  const rows = page.items.map((d) => {
    const c = d.certificate || {};
    return h("tr", {},
      h("td", { class: "host", "data-label": "Host" }, h("a", { href: `#/domain/${enc(d.host)}` }, d.host)),
      h("td", { class: "mono", "data-label": "Upstreams" }, d.upstreams.join(", ")),
      h("td", { "data-label": "TLS" }, { off: "off", manual: "uploaded", auto: "Let's Encrypt" }[d.tls]),
      h("td", { "data-label": "Certificate" }, d.tls === "off" ? h("span", { class: "muted" }, "—") : badge(c.state)),
      h("td", { "data-label": "Expires" }, time(c.not_after)),
      h("td", { "data-label": "Next renewal" }, time(c.renew_at)),
      h("td", { class: "err", "data-label": "Last error" }, c.last_error || ""));
  });
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", class: "quiet", id: "prev", disabled: !after, onclick: () => {
      go({ prefix, cert_state: state, after: previous.pop() || "" });
    } }, "Previous"),
    h("button", { type: "button", class: "quiet", id: "next", disabled: !page.next, onclick: () => {
      previous.push(after);
      go({ prefix, cert_state: state, after: page.next });
    } }, "Next"),
    h("span", { class: "muted" }, `${page.items.length} shown${page.next ? ", more after" : ""}`));
  main.replaceChildren(
    h("h1", {}, "Domains"),
    h("div", { class: "toolbar" },
      h("div", { class: "grow" }, h("label", { for: "search" }, "Host starts with"), search),
      h("div", {}, h("label", { for: "cert-state" }, "Certificate"), filter),
      h("div", {}, h("a", { href: "#/domain/", id: "add-domain", class: "button" }, "Add a domain"))),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "responsive", id: "domains" },
        h("thead", {}, h("tr", {}, ["Host", "Upstreams", "TLS", "Certificate", "Expires", "Next renewal", "Last error"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)))
      : h("div", { class: "panel empty" }, prefix || state
        ? "No domain matches. Change the search or the filter."
        : "No domain yet. Add one, or put them with the CLI (edgeward domain put)."),
    pager);
  if (prefix) {
    search.focus();
    search.setSelectionRange(prefix.length, prefix.length);
  }
}

function domainForm(d) {
  const isNew = !d;
  const host = h("input", { type: "text", name: "host", id: "f-host", required: true, spellcheck: "false",
    placeholder: "shop.example or *.example", autocomplete: "off" });
  const upstreams = h("textarea", { name: "upstreams", id: "f-upstreams", rows: 3, spellcheck: "false",
    placeholder: "10.0.0.5:8080" });
  upstreams.value = d ? d.upstreams.join("\n") : "";
  const tls = h("select", { name: "tls", id: "f-tls" },
    [["off", "Off (HTTP only)"], ["manual", "Uploaded certificate"], ["auto", "Let's Encrypt"]]
      .map(([v, t]) => h("option", { value: v, selected: d ? d.tls === v : v === "off" }, t)));
  const redirect = h("input", { type: "checkbox", name: "redirect_https", id: "f-redirect", checked: !!(d && d.redirect_https) });
  const challenges = h("select", { name: "acme_challenges", id: "f-challenges" },
    [["intercept", "Answered by edgeward"], ["passthrough", "Passed to the upstream (the customer runs ACME)"]]
      .map(([v, t]) => h("option", { value: v, selected: d ? d.acme_challenges === v : v === "intercept" }, t)));
  const challenge = h("select", { name: "acme_challenge", id: "f-acme-challenge" },
    [["", "Default (HTTP-01; DNS-01 for a wildcard)"], ["http-01", "HTTP-01 (port 80)"],
      ["tls-alpn-01", "TLS-ALPN-01 (port 443)"], ["dns-01", "DNS-01 (a TXT record)"]]
      .map(([v, t]) => h("option", { value: v, selected: (d && d.acme_challenge || "") === v }, t)));
  const form = h("form", { class: "panel", id: "domain-form", novalidate: true },
    h("h2", {}, isNew ? "New domain" : "Settings"),
    isNew ? field("host", "Host", host, "An exact name, or a wildcard (*.example) for every name under it.") : null,
    field("upstreams", "Upstreams", upstreams, "One address (IP:port) per line; requests are spread over them."),
    field("tls", "TLS", tls),
    field("redirect_https", "Redirect HTTP to HTTPS", redirect),
    field("acme_challenges", "ACME challenges", challenges),
    field("acme_challenge", "Let's Encrypt validation", challenge,
      "How Let's Encrypt checks the name when TLS is Let's Encrypt."),
    h("div", { class: "form-error", role: "alert" }),
    h("div", { class: "buttons" }, h("button", { type: "submit", id: "save" }, isNew ? "Add domain" : "Save")));
  const body = () => {
    const b = {
      upstreams: upstreams.value.split(/[\s,]+/).filter(Boolean),
      tls: tls.value,
      redirect_https: redirect.checked,
      acme_challenges: challenges.value,
    };
    if (challenge.value) b.acme_challenge = challenge.value;
    // What the form does not show is kept as stored.
    if (d && d.certificate_host) b.certificate_host = d.certificate_host;
    if (d && d.upstream_timeouts) b.upstream_timeouts = d.upstream_timeouts;
    return b;
  };
  return { form, host, body };
}

function certificatePanel(d, certHost) {
  const status = h("div", { id: "cert-status" });
  const chain = h("textarea", { name: "chain_pem", id: "f-chain", spellcheck: "false",
    placeholder: "-----BEGIN CERTIFICATE-----" });
  const key = h("textarea", { name: "key_pem", id: "f-key", spellcheck: "false",
    placeholder: "-----BEGIN PRIVATE KEY-----" });
  const fileInto = (target, id) => {
    const f = h("input", { type: "file", id, accept: ".pem,.crt,.key,.cer,text/plain" });
    f.addEventListener("change", async () => {
      if (f.files[0]) target.value = await f.files[0].text();
    });
    return h("div", {}, h("label", { for: id }, "or from a file"), f);
  };
  const upload = h("form", { id: "cert-form", novalidate: true },
    h("h2", {}, "Upload a certificate"),
    field("chain_pem", "Certificate chain (PEM, leaf first)", chain), fileInto(chain, "f-chain-file"),
    field("key_pem", "Private key (PEM)", key), fileInto(key, "f-key-file"),
    h("div", { class: "form-error", role: "alert" }),
    h("div", { class: "buttons" }, h("button", { type: "submit", id: "upload" }, "Upload")));
  upload.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(upload);
    try {
      await api("PUT", `/v1/certificates/${enc(certHost)}`, { chain_pem: chain.value, key_pem: key.value });
      chain.value = "";
      key.value = "";
      notify(`Certificate for ${certHost} uploaded and served.`);
      await refresh();
    } catch (e) {
      showError(upload, e);
    }
  });
  const refresh = async () => {
    const fresh = await api("GET", `/v1/domains/${enc(d.host)}`);
    let cert = null;
    try {
      cert = await api("GET", `/v1/certificates/${enc(certHost)}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
    const c = fresh.certificate || {};
    status.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "State"), h("dd", { id: "cert-state" }, fresh.tls === "off" ? "TLS is off" : badge(c.state)),
      c.renewal_requested ? [h("dt", {}, "Renewal"), h("dd", {}, "asked for, waiting for the order budget or back-off")] : null,
      h("dt", {}, "Expires"), h("dd", {}, timeLong(cert ? cert.not_after : c.not_after)),
      fresh.tls === "auto" ? [h("dt", {}, "Next renewal"), h("dd", {}, timeLong(c.renew_at))] : null,
      c.next_attempt ? [h("dt", {}, "Next attempt"), h("dd", {}, timeLong(c.next_attempt))] : null,
      c.last_error ? [h("dt", {}, "Last error"), h("dd", { class: "form-error", id: "cert-error" }, c.last_error)] : null,
      cert ? [h("dt", {}, "Names"), h("dd", {}, cert.names.join(", ")),
        h("dt", {}, "Issuer"), h("dd", {}, cert.issuer),
        h("dt", {}, "Serial"), h("dd", { class: "mono" }, cert.serial),
        h("dt", {}, "Source"), h("dd", {}, cert.source === "acme" ? "Let's Encrypt" : "uploaded")]
        : [h("dt", {}, "Stored"), h("dd", {}, `no certificate stored under ${certHost}`)]));
    return fresh;
  };
  const renew = h("button", { type: "button", id: "renew", hidden: d.tls !== "auto", onclick: async () => {
    try {
      await api("POST", `/v1/domains/${enc(d.host)}/renew`);
      notify(`Renewal of ${d.host} asked for: it starts within the order budget and any back-off.`);
      await refresh();
    } catch (e) {
      notify(e.message, true);
    }
  } }, "Renew now");
  const panel = h("section", { class: "panel", "aria-labelledby": "cert-h" },
    h("h2", { id: "cert-h" }, "Certificate"), status,
    h("div", { class: "buttons" }, renew),
    d.tls === "auto" ? null : upload);
  return { panel, refresh };
}

export async function domainPage(main, r) {
  const host = r.arg;
  let d = null;
  if (host) {
    try {
      d = await api("GET", `/v1/domains/${enc(host)}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      main.replaceChildren(h("h1", {}, host), h("p", {}, `There is no domain ${host}. `,
        h("a", { href: "#/domain/" }, "Add a domain"), " or ", h("a", { href: "#/domains" }, "go back to the list"), "."));
      return;
    }
  }
  const { form, host: hostInput, body } = domainForm(d);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const target = d ? d.host : hostInput.value.trim().toLowerCase();
    if (!target) return showError(form, { field: "host", message: "is required" });
    try {
      const saved = await api("PUT", `/v1/domains/${enc(target)}`, body());
      notify(`${saved.host} saved.`);
      if (!d) location.hash = `#/domain/${enc(saved.host)}`;
      else window.dispatchEvent(new Event("hashchange"));
    } catch (e) {
      showError(form, e);
    }
  });
  if (!d) {
    main.replaceChildren(h("h1", {}, "Add a domain"), form);
    hostInput.focus();
    return;
  }
  const certHost = d.certificate_host || d.host;
  const { panel, refresh } = certificatePanel(d, certHost);
  const dialog = h("dialog", { id: "confirm-delete", "aria-labelledby": "del-h" },
    h("h2", { id: "del-h" }, `Delete ${d.host}?`),
    h("p", {}, "Requests for it stop being routed at once. Its stored certificate stays (delete it with " +
      "edgeward cert rm)."),
    h("form", { method: "dialog", class: "buttons" },
      h("button", { value: "cancel", class: "quiet", autofocus: true }, "Cancel"),
      h("button", { value: "delete", class: "danger", id: "confirm" }, "Delete")));
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await api("DELETE", `/v1/domains/${enc(d.host)}`);
      notify(`${d.host} deleted.`);
      location.hash = "#/domains";
    } catch (e) {
      notify(e.message, true);
    }
  });
  main.replaceChildren(
    h("h1", {}, d.host),
    h("div", { class: "grid2" },
      h("div", {}, form),
      h("div", {}, panel,
        h("section", { class: "panel" }, h("h2", {}, "Delete"),
          h("button", { type: "button", class: "danger", id: "delete", onclick: () => dialog.showModal() },
            "Delete this domain…")))),
    dialog);
  await refresh();
  // The certificate's state changes on its own (an order in flight): watch it.
  return every(2000, refresh);
}
