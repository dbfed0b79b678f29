// Overview, Certificates and Activity. Each view renders into `main` and returns its cleanup
// (timers), or nothing.

import { api, metrics, sum, enc } from "./api.js";
import { h, notify, time, timeLong, every } from "./ui.js";

export { domains, domainPage } from "./domains.js";

/** A number and its label; `cls` colours it ("ok", or "bad" when above zero) once it is known. */
function card(label, value, href, cls) {
  const shown = typeof value === "number" && (cls !== "bad" || value > 0) ? cls : "";
  const body = [h("div", { class: `n ${shown || ""}` }, value), h("div", { class: "l" }, label)];
  return h("div", { class: "card" }, href ? h("a", { href, class: "plain" }, body) : body);
}

export async function overview(main) {
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const updated = h("p", { class: "muted" });
  main.replaceChildren(h("h1", {}, "Overview"), cards, updated);
  let last = null;
  const tick = async () => {
    const [m, ups] = await Promise.all([metrics(), api("GET", "/v1/upstreams")]);
    const now = Date.now();
    const counters = {
      requests: sum(m, "edgeward_requests_total"),
      challenges: sum(m, "edgeward_acme_challenge_requests_total"),
    };
    const rate = (k) => {
      if (!last || now <= last.at) return "—";
      return ((counters[k] - last[k]) / ((now - last.at) / 1000)).toFixed(1);
    };
    const acme = m.has("edgeward_acme_orders_in_flight");
    const st = (s) => (acme ? sum(m, "edgeward_acme_certificates", { state: s }) : "—");
    const healthy = ups.filter((b) => b.healthy).length;
    cards.replaceChildren(
      card("domains", sum(m, "edgeward_domains"), "#/domains"),
      card("certificates loaded", sum(m, "edgeward_certificates"), "#/certificates"),
      card("Let's Encrypt valid", st("valid"), "#/domains?cert_state=valid", "ok"),
      card("expiring within 7 days", acme ? sum(m, "edgeward_acme_certificates_expiring_7d") : "—",
        "#/certificates"),
      card("Let's Encrypt failed", st("failed"), "#/domains?cert_state=failed", "bad"),
      card("Let's Encrypt pending", st("pending"), "#/domains?cert_state=pending"),
      card("renewing", st("renewing"), "#/domains?cert_state=renewing"),
      card("orders in flight", acme ? sum(m, "edgeward_acme_orders_in_flight") : "—"),
      card("order budget left", acme ? sum(m, "edgeward_acme_order_budget_left") : "—"),
      card("backends healthy", healthy),
      card("backends unhealthy", ups.length - healthy, null, "bad"),
      card("requests / s", rate("requests")),
      card("challenge requests / s", rate("challenges")),
    );
    updated.textContent = (acme ? "" : "This node has no edgeward.acme section: it orders no " +
      "certificates. ") + `Updated ${new Date(now).toLocaleTimeString()}, every 5 seconds.`;
    last = { at: now, ...counters };
  };
  await tick();
  return every(5000, tick);
}

export async function certificates(main, r) {
  const after = r.params.get("after");
  const page = await api("GET", `/v1/certificates?sort=not_after&limit=100${after ? `&after=${enc(after)}` : ""}`);
  const rows = page.items.map((c) => h("tr", {},
    h("td", { class: "host", "data-label": "Host" }, h("a", { href: `#/domain/${enc(c.host)}` }, c.host)),
    h("td", { "data-label": "Expires" }, time(c.not_after)),
    h("td", { class: "host", "data-label": "Names" }, c.names.join(", ")),
    h("td", { "data-label": "Issuer" }, c.issuer),
    h("td", { "data-label": "Source" }, c.source === "acme" ? "Let's Encrypt" : "uploaded"),
    h("td", { class: "mono", "data-label": "Serial" }, c.serial)));
  main.replaceChildren(
    h("h1", {}, "Certificates"),
    h("p", { class: "muted" }, "Soonest expiry first."),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "responsive", id: "certificates" },
        h("thead", {}, h("tr", {}, ["Host", "Expires", "Names", "Issuer", "Source", "Serial"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)))
      : h("div", { class: "panel empty" }, "No certificate is loaded. Upload one on a domain's page, or " +
        "switch a domain to Let's Encrypt."),
    h("div", { class: "pager" },
      after ? h("a", { href: "#/certificates" }, "First page") : null,
      page.next ? h("a", { href: `#/certificates?after=${enc(page.next)}`, id: "next" }, "Next page") : null));
}

export async function activity(main) {
  const list = h("ol", { class: "events", id: "events", reversed: true });
  const missed = h("p", { class: "muted" });
  main.replaceChildren(h("h1", {}, "Activity"),
    h("p", { class: "muted" }, "Recent events on this node, newest first (kept in memory, the last 1,000)."),
    missed, h("div", { class: "panel" }, list));
  let after = 0;
  const tick = async () => {
    let page = await api("GET", `/v1/events?after=${after}`);
    if (page.last_id < after) {
      // A new process (restart or upgrade) counts from 1 again.
      list.replaceChildren();
      page = await api("GET", "/v1/events?after=0");
    }
    if (page.missed) missed.textContent = `${page.missed} older events were dropped from the ring.`;
    for (const e of page.events) {
      list.prepend(h("li", { "data-kind": e.kind },
        h("div", { class: "when" }, timeLong(e.time), ` · ${e.kind} · ${e.source}`),
        h("div", {}, e.host ? [h("a", { href: `#/domain/${enc(e.host)}` }, e.host), ": "] : null, e.message),
        e.error ? h("div", { class: "form-error" }, e.error) : null));
    }
    after = page.last_id;
    if (!list.children.length) list.replaceChildren(h("li", { class: "muted" }, "Nothing has happened yet."));
    else list.querySelector("li.muted")?.remove();
  };
  await tick();
  return every(3000, tick);
}

export async function notFound(main) {
  notify("");
  main.replaceChildren(h("h1", {}, "Not found"),
    h("p", {}, "This page does not exist. ", h("a", { href: "#/overview" }, "Go to the overview.")));
}
