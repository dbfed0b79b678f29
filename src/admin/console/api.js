// The console's only way to edgeward: the public admin API, with the bearer token from
// sessionStorage (never a cookie, never in a URL sent to the server).

const KEY = "edgeward.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API answer that is not a success: the status, the API's message and the field it names. */
export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

/** Call the admin API; resolves to the JSON answer (null for an empty one). */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "edgeward did not answer. Check that it is running and that this page " +
      "is opened from its admin listener.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = text;
    }
  }
  if (response.status === 401) {
    token.clear();
    window.dispatchEvent(new Event("edgeward:signed-out"));
    throw new ApiError(401, "The token was refused. Sign in with the admin token again.");
  }
  if (!response.ok) {
    const message = (data && data.error) || `edgeward answered ${response.status}`;
    throw new ApiError(response.status, message, data && data.field);
  }
  return data;
}

/** `GET /metrics`, parsed: name -> [{labels, value}]. */
export async function metrics() {
  const text = await api("GET", "/metrics");
  const out = new Map();
  for (const line of String(text || "").split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2];
    }
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[4]) });
  }
  return out;
}

/** The sum of a metric's samples whose labels match `want`. */
export function sum(m, name, want = {}) {
  return (m.get(name) || [])
    .filter((s) => Object.entries(want).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

export const enc = encodeURIComponent;
