/* Errors are shown, never swallowed: next to the action that failed, or in the banner at the top. */
import { ApiError } from "./http.js";
import { $, el } from "./lib.js";

export function showBanner(message) {
  const b = $("#banner");
  b.replaceChildren(el("span", {}, message), el("button", { class: "ghost", onclick: () => { b.hidden = true; } }, "×"));
  b.hidden = false;
}

export function hideBanner() {
  $("#banner").hidden = true;
}

/** The error as a visible box, with the HTTP status when the server answered. */
export function errorBox(err) {
  const msg = err instanceof ApiError && err.status ? `${err.message} (HTTP ${err.status})` : err.message || String(err);
  return el("div", { class: "error", role: "alert" }, msg);
}

/** Run `fn`, showing any error inside `slot` (an element) instead of failing silently. */
export async function guarded(slot, fn) {
  if (slot) for (const e of slot.querySelectorAll(":scope > .error")) e.remove();  // old errors go; content stays
  try {
    return await fn();
  } catch (err) {
    if (err.name === "AbortError") return undefined;
    if (slot) slot.replaceChildren(errorBox(err));
    else showBanner(err.message || String(err));
    return undefined;
  }
}

/** Uncaught script errors go to the banner, so the page is never left blank. */
export function reportUncaughtErrors() {
  window.addEventListener("error", (e) => showBanner(`console error: ${e.message}`));
  window.addEventListener("unhandledrejection", (e) => {
    if (e.reason && e.reason.name === "AbortError") return;
    showBanner(`console error: ${(e.reason && e.reason.message) || e.reason}`);
  });
}
