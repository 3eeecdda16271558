/* luodi console: native ES modules, no build step, no network beyond this server.
 * Every panel calls the public /v1/* routes with the API key kept in localStorage (sent as Bearer).
 * This module is the router: the URL's #hash names the panel drawn into #panel. */
import { Agent } from "./agent.js";
import { Apps } from "./apps.js";
import { AuditLog } from "./auditlog.js";
import { Auth } from "./auth.js";
import { Chat } from "./chat.js";
import { errorBox, reportUncaughtErrors } from "./errors.js";
import { KB } from "./kb.js";
import { Keys } from "./keys.js";
import { $ } from "./lib.js";
import { Tickets } from "./tickets.js";

reportUncaughtErrors();

/** Each panel draws itself with render(root, redraw); redraw() draws it again (e.g. after switching a tab). */
const PANELS = { chat: Chat, agent: Agent, kb: KB, apps: Apps, tickets: Tickets, keys: Keys, audit: AuditLog };

const Router = {
  current: "chat",
  show(name, force = false) {
    if (!PANELS[name]) name = "chat";
    if (name === this.current && !force && $("#panel").childElementCount) return;
    this.current = name;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.panel === name);
    const root = $("#panel");
    root.replaceChildren();
    root.dataset.panel = name;
    try {
      PANELS[name].render(root, () => this.show(name, true));
    } catch (err) {
      root.append(errorBox(err));
    }
  },
  init() {
    window.addEventListener("hashchange", () => this.show(location.hash.slice(1)));
    this.show(location.hash.slice(1) || "chat", true);
  },
};

document.addEventListener("DOMContentLoaded", () => {
  Auth.init(() => Router.show(Router.current, true));
  Router.init();
});
