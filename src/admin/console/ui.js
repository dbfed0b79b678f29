// Small DOM helpers shared by the views: elements built with textContent only (hosts, errors and
// messages are data, never HTML), the notice line, dates in the browser's local time.

/** `h("a", {href: "#/x", onclick: f}, "text", child)`: an element; `on*` attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The status line under the header (announced to screen readers); "" clears it. */
export function notify(message, bad = false) {
  const n = document.getElementById("notice");
  n.textContent = message;
  n.classList.toggle("bad", bad);
}

/** A date in the browser's local time. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

/** "in 12 days", "3 hours ago". */
export function relative(iso) {
  if (!iso) return "—";
  const ms = new Date(iso) - Date.now();
  if (isNaN(ms)) return iso;
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const abs = Math.abs(ms);
  if (abs >= 86400e3) return rtf.format(Math.round(ms / 86400e3), "day");
  if (abs >= 3600e3) return rtf.format(Math.round(ms / 3600e3), "hour");
  if (abs >= 60e3) return rtf.format(Math.round(ms / 60e3), "minute");
  return rtf.format(Math.round(ms / 1e3), "second");
}

/** A `<time>`: relative text, the local date and time as its title. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: when(iso) }, relative(iso));
}

/** A `<time>` with both: "in 12 days (14/12/2026, 10:00:00)". */
export function timeLong(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso }, `${relative(iso)} (${when(iso)})`);
}

export function badge(state) {
  return h("span", { class: `badge ${state || "off"}` }, state || "no TLS");
}

/** A labelled form field; `error` is where the API's message for `name` goes. */
export function field(name, label, control, hint) {
  const id = control.id || `f-${name}`;
  control.id = id;
  const error = h("div", { class: "error", id: `${id}-error`, "data-error-for": name });
  control.setAttribute("aria-describedby", `${id}-error${hint ? ` ${id}-hint` : ""}`);
  return h("div", { class: "field", "data-field": name },
    control.type === "checkbox"
      ? h("label", { class: "check" }, control, label)
      : [h("label", { for: id }, label), control],
    hint ? h("div", { class: "hint", id: `${id}-hint` }, hint) : null,
    error);
}

/** Show an API error next to the field it names (`ops[0].upstreams[1]` -> `upstreams`), else in
 * the form's own error line. */
export function showError(form, e) {
  clearErrors(form);
  const name = (e.field || "").replace(/^ops\[\d+\]\./, "").split(/[.[]/)[0];
  const slot = name && form.querySelector(`[data-error-for="${name}"]`);
  if (slot) {
    slot.textContent = e.message;
    slot.closest(".field").classList.add("invalid");
    const general = form.querySelector(".form-error");
    if (general) general.textContent = "Not saved: correct the field above, then try again.";
    const input = slot.closest(".field").querySelector("input, textarea, select");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  } else {
    const general = form.querySelector(".form-error");
    if (general) general.textContent = e.message;
  }
}

export function clearErrors(form) {
  for (const s of form.querySelectorAll("[data-error-for]")) s.textContent = "";
  for (const f of form.querySelectorAll(".invalid")) f.classList.remove("invalid");
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const general = form.querySelector(".form-error");
  if (general) general.textContent = "";
}

/** Run `f` every `ms` while the view is shown; returns the view's cleanup. */
export function every(ms, f) {
  const t = setInterval(() => f().catch((e) => notify(e.message, true)), ms);
  return () => clearInterval(t);
}
