// The console's shell: the token (form or `#token=` fragment), the hash router, and the views'
// timers. Every view is in views.js; every call goes through api.js.

import { api, token, ApiError } from "./api.js";
import { h, notify } from "./ui.js";
import * as views from "./views.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");
let cleanup = null;

/** `#token=T` (a link from an operator's script): kept in sessionStorage, removed from the URL. */
function tokenFromFragment() {
  const m = location.hash.match(/^#token=([^&]*)/);
  if (m) {
    token.set(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/overview");
  }
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { view: parts[0] || "overview", arg: parts.slice(1).join("/"), params: new URLSearchParams(query) };
}

function showLogin(message) {
  nav.hidden = true;
  signout.hidden = true;
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "current-password",
    required: true, "aria-describedby": "token-hint" });
  const err = h("div", { class: "form-error", id: "login-error", role: "alert" }, message || "");
  const form = h("form", { class: "panel login", id: "login" },
    h("h1", {}, "Sign in to edgeward"),
    h("div", { class: "field" },
      h("label", { for: "token" }, "Admin token"),
      input,
      h("div", { class: "hint", id: "token-hint" },
        "The content of the admin token file (admin_token_file) or EDGEWARD_ADMIN_TOKEN. " +
        "It stays in this tab only.")),
    err,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(input.value.trim());
    err.textContent = "";
    try {
      await api("GET", "/v1/events?limit=1");
      if (!location.hash || location.hash === "#/login") location.hash = "#/overview";
      render();
    } catch (e) {
      err.textContent = e instanceof ApiError ? e.message : String(e);
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function render() {
  if (cleanup) cleanup();
  cleanup = null;
  notify("");
  if (!token.get()) return showLogin();
  nav.hidden = false;
  signout.hidden = false;
  const r = route();
  for (const a of nav.querySelectorAll("a")) {
    const current = a.dataset.view === r.view || (r.view === "domain" && a.dataset.view === "domains");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = {
    overview: views.overview,
    domains: views.domains,
    domain: views.domainPage,
    certificates: views.certificates,
    activity: views.activity,
  }[r.view] || views.notFound;
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    cleanup = (await view(main, r)) || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.replaceChildren(h("div", { class: "panel" },
      h("h1", {}, "Could not load this page"),
      h("p", { class: "form-error" }, e.message || String(e)),
      h("button", { type: "button", onclick: render }, "Try again")));
  }
  main.focus({ preventScroll: true });
}

signout.addEventListener("click", () => {
  token.clear();
  location.hash = "#/overview";
  render();
});
window.addEventListener("edgeward:signed-out", () => {
  if (cleanup) cleanup();
  cleanup = null;
  showLogin("Signed out: the token was refused. Sign in again.");
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#token=")) tokenFromFragment();
  render();
});

tokenFromFragment();
render();
