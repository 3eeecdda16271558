/* Small DOM and formatting helpers shared by every panel. */

/** Build an element: el("div", {class: "x", onclick: fn}, "text", child, ...). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "value") node.value = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** A path segment, escaped (knowledge-base names, ids, versions). */
export const enc = encodeURIComponent;

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

export function fmtValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
  if (v && typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** Accept the shapes list routes answer with: a bare array, {data: [...]}, or {<name>: [...]}. */
export function asList(body, ...names) {
  if (Array.isArray(body)) return body;
  if (!body || typeof body !== "object") return [];
  for (const n of ["data", ...names]) if (Array.isArray(body[n])) return body[n];
  const arrays = Object.values(body).filter(Array.isArray);
  return arrays.length === 1 ? arrays[0] : [];
}
