/* The API key box at the top right: the key is kept in localStorage and the pill says whether it works. */
import { hideBanner, showBanner } from "./errors.js";
import { api, onUnauthorized, saveKey, savedKey } from "./http.js";
import { $ } from "./lib.js";

export const Auth = {
  set(state, text) {
    const pill = $("#auth-status");
    pill.dataset.state = state;
    pill.textContent = text;
  },
  failed() {
    this.set("error", savedKey() ? "key rejected" : "key needed");
  },
  /** Probe /v1/models: tells whether the server needs a key and whether ours works. */
  async check() {
    const has = !!savedKey();
    try {
      await api("/v1/models");
      this.set("ok", has ? "key ok" : "no key needed");
      hideBanner();
      await this.checkAdmin();
    } catch (err) {
      $("#nav-audit").hidden = true;
      if (err.status === 401) {
        this.set("error", has ? "key rejected" : "key needed");
        showBanner(has ? `The saved API key was refused: ${err.message}` :
          "This server requires an API key: paste it at the top right (`luodi keys create NAME` makes one).");
      } else {
        this.set("warn", err.status ? `HTTP ${err.status}` : "offline");
      }
    }
  },
  /** Admin keys (or a server without auth) may read the audit log: only they see its entry in the menu. */
  async checkAdmin() {
    let admin = false;
    try {
      await api("/v1/audit-log?limit=1");
      admin = true;
    } catch { /* 403: a user key */ }
    this.admin = admin;
    $("#nav-audit").hidden = !admin;
    document.body.dataset.admin = String(admin);
  },
  /** Wire the form; `onKeySaved` runs once a newly saved key has been checked (the router redraws the panel). */
  init(onKeySaved) {
    onUnauthorized(() => this.failed());
    const input = $("#auth-key");
    input.value = savedKey();
    $("#auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      saveKey(input.value.trim());
      this.check().then(onKeySaved);
    });
    $("#auth-forget").addEventListener("click", () => {
      saveKey("");
      input.value = "";
      $("#nav-audit").hidden = true;
      this.check();
    });
    this.check();
  },
};
