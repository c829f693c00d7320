// Calls to the k2e API with the session cookie; state-changing calls echo the CSRF token.
let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export async function api(path, { method = "GET", json, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, signal, credentials: "same-origin" });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : { detail: await response.text() };
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("k2e:signed-out"));
    throw new ApiError(response.status, data);
  }
  return data;
}

export function upload(kind, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return api(`/${kind}`, { method: "POST", body: form });
}
