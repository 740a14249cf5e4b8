// evidex console: live updates, the export wizard and the forms that call the /v1
// API. Served from /assets/console.js (the Content-Security-Policy allows no inline
// script). Console calls are authenticated by the session cookie and carry the
// session's CSRF token in x-csrf-token.
"use strict";
(() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const ACTIVE = ["queued", "processing"];

  async function api(method, url, body) {
    const opts = { method, credentials: "same-origin", headers: { "x-csrf-token": csrf } };
    if (body !== undefined) {
      opts.headers["content-type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, opts);
    } catch (e) {
      return { ok: false, status: 0, data: { error: { message: "the server did not answer: " + e } } };
    }
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    return { ok: r.ok, status: r.status, data };
  }
  const errMsg = (r) => (r.data && r.data.error && r.data.error.message) || ("HTTP " + r.status);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  // Times in the user's timezone, UTC on hover.
  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const iso = t.getAttribute("datetime");
      const d = new Date(iso);
      if (isNaN(d)) continue;
      t.title = d.toISOString().replace(".000Z", "Z") + " (UTC)";
      t.textContent = d.toLocaleString();
    }
  }
  localTimes(document);

  for (const input of document.querySelectorAll("[data-default-browser-tz]")) {
    if (!input.value) input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  const say = (m) => {
    const o = document.getElementById("action-result") || document.getElementById("live");
    if (o) o.textContent = m;
  };

  // Row and page actions.
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b || b.type === "submit") return;
    const d = b.dataset;
    if (d.confirm && !window.confirm(d.confirm)) return;
    let r;
    if (d.cancel) {
      r = await api("POST", "/v1/exports/" + d.cancel + "/cancel");
      if (r.ok) return location.reload();
    } else if (d.rerun) {
      r = await api("POST", "/v1/exports/" + d.rerun + "/rerun");
      if (r.ok) return location.assign("/exports/" + r.data.id);
    } else if (d.deliver) {
      r = await api("POST", "/v1/exports/" + d.deliver + "/deliver");
      if (r.ok) return location.reload();
    } else if (d.link) {
      r = await api("POST", "/v1/exports/" + d.link + "/link", {});
      if (r.ok) {
        try { await navigator.clipboard.writeText(r.data.url); } catch (_) { /* shown below */ }
        const out = document.getElementById("share-result");
        out.textContent = "Share link (valid until " + new Date(r.data.expires_at).toLocaleString() + "): " + r.data.url;
        return;
      }
    } else if (d.runSchedule) {
      r = await api("POST", "/v1/schedules/" + d.runSchedule + "/run");
      if (r.ok) return location.assign("/exports/" + r.data.id);
    } else if (d.deleteSchedule) {
      r = await api("DELETE", "/v1/schedules/" + d.deleteSchedule);
      if (r.ok) return location.assign("/schedules");
    } else if (d.apiClick) {
      const [m, u] = d.apiClick.split(" ");
      r = await api(m, u);
      if (r.ok) return location.reload();
    } else if (b.hasAttribute("data-test-delivery")) {
      return testDelivery(b.form);
    } else {
      return;
    }
    say(errMsg(r));
  });

  // Exports table: live status, progress and rows while anything runs.
  const jobs = document.querySelector('table[data-live="exports"]');
  function renderStatus(td, j) {
    td.replaceChildren(el("span", "badge " + j.status, j.status));
    if (j.status === "processing") {
      const p = el("progress");
      p.max = 100;
      p.value = j.progress.percent || 0;
      p.setAttribute("aria-label", "progress");
      td.append(p);
    }
    if (j.status === "failed" && j.error) td.append(el("div", "error small", j.error));
  }
  async function pollExports() {
    const rows = [...jobs.querySelectorAll("tr[data-job-id]")];
    if (!rows.some((tr) => ACTIVE.includes(tr.dataset.status))) return;
    const r = await api("GET", "/v1/exports?limit=100");
    if (r.ok) {
      const byId = new Map(r.data.items.map((j) => [j.id, j]));
      for (const tr of rows) {
        const j = byId.get(tr.dataset.jobId);
        if (!j) continue;
        tr.querySelector("td.rows").textContent = j.progress.rows_written;
        if (j.status !== tr.dataset.status) {
          tr.dataset.status = j.status;
          renderStatus(tr.querySelector("td.status"), j);
          const act = tr.querySelector("td.action");
          act.replaceChildren();
          if (j.status === "completed" && document.getElementById("create-export")) {
            const a = el("a", "download button", "Download");
            a.href = "/v1/exports/" + j.id + "/download";
            act.append(a);
          }
          document.getElementById("live").textContent = j.name + " is " + j.status;
        } else if (j.status === "processing") {
          renderStatus(tr.querySelector("td.status"), j);
        }
      }
    }
    setTimeout(pollExports, 1000);
  }
  if (jobs) setTimeout(pollExports, 1000);

  // Export detail: live until it ends, then reload once to show the artifact.
  const facts = document.querySelector('dl[data-live="export"]');
  async function pollExport() {
    if (!ACTIVE.includes(facts.dataset.status)) return;
    const r = await api("GET", "/v1/exports/" + facts.dataset.jobId);
    if (r.ok) {
      if (r.data.status !== facts.dataset.status && !ACTIVE.includes(r.data.status)) return location.reload();
      facts.dataset.status = r.data.status;
      const st = document.getElementById("status");
      st.textContent = r.data.status;
      st.className = "badge " + r.data.status;
      document.getElementById("rows").textContent = r.data.progress.rows_written;
      const p = document.getElementById("progress");
      if (p) p.value = r.data.progress.percent || 0;
    }
    setTimeout(pollExport, 1000);
  }
  if (facts) setTimeout(pollExport, 1000);

  // Generic API forms: <form data-api="METHOD /path">; fields become JSON (dotted
  // names nest, data-bool checkboxes are booleans, data-array checkboxes lists,
  // data-number numbers, data-json-fields JSON text); empty fields are left out.
  function setPath(obj, path, v) {
    const parts = path.split(".");
    let o = obj;
    for (const p of parts.slice(0, -1)) o = o[p] = o[p] || {};
    o[parts[parts.length - 1]] = v;
  }
  function formJson(form) {
    const out = {};
    const arrays = {};
    const jsonFields = (form.dataset.jsonFields || "").split(",").filter(Boolean);
    const [mergeFrom, mergeInto] = (form.dataset.merge || ":").split(":");
    for (const f of form.elements) {
      if (!f.name || f.disabled || f.type === "submit" || f.type === "button") continue;
      let v;
      if (f.type === "checkbox") {
        if (f.hasAttribute("data-array")) {
          arrays[f.name] = arrays[f.name] || [];
          if (f.checked) arrays[f.name].push(f.value);
          continue;
        }
        v = f.checked;
      } else if (f.tagName === "SELECT" && f.multiple) {
        v = [...f.selectedOptions].map((o) => o.value);
      } else {
        v = f.value.trim();
        if (f.hasAttribute("data-rules")) {
          // "name: pattern" per line (the pattern may itself contain ": ").
          v = v.split("\n").map((l) => l.trim()).filter(Boolean).map((l, i) => {
            const at = l.indexOf(":");
            if (at < 1) throw new Error(f.name + " line " + (i + 1) + ": write NAME: PATTERN");
            return { name: l.slice(0, at).trim(), pattern: l.slice(at + 1).trim() };
          });
          setPath(out, f.name, v);
          continue;
        }
        if (f.hasAttribute("data-csv")) {
          setPath(out, f.name, v.split(",").map((x) => x.trim()).filter(Boolean));
          continue;
        }
        if (v === "") continue;
        if (f.hasAttribute("data-number")) v = Number(v);
        if (jsonFields.includes(f.name) || f.name === mergeFrom) {
          try { v = JSON.parse(v); } catch (_) { throw new Error(f.name + ": not valid JSON"); }
        }
      }
      setPath(out, f.name, v);
    }
    for (const [k, v] of Object.entries(arrays)) setPath(out, k, v);
    // Drop empty lists inside nested objects (an unselected multi-select).
    (function prune(o) {
      for (const [k, v] of Object.entries(o)) {
        if (Array.isArray(v) && v.length === 0 && o !== out) delete o[k];
        else if (v && typeof v === "object" && !Array.isArray(v)) prune(v);
      }
    })(out);
    if (mergeFrom && out[mergeFrom] !== undefined) {
      const extra = out[mergeFrom];
      delete out[mergeFrom];
      const into = (out[mergeInto] = out[mergeInto] || {});
      for (const [k, v] of Object.entries(extra)) {
        if (v && typeof v === "object" && !Array.isArray(v) && into[k] && typeof into[k] === "object") {
          Object.assign(into[k], v);
        } else {
          into[k] = v;
        }
      }
    }
    return out;
  }

  // Schedule forms: say in words what the schedule does, and its next runs.
  for (const form of document.querySelectorAll("form[data-schedule-preview]")) {
    const box = form.querySelector("#schedule-preview");
    let t = null;
    const update = () => {
      clearTimeout(t);
      t = setTimeout(async () => {
        let body;
        try { body = formJson(form); } catch (e) { box.hidden = false; box.textContent = e.message; return; }
        if (!body.name) body.name = "name";
        const r = await api("POST", "/v1/schedules/preview", body);
        box.hidden = false;
        box.replaceChildren();
        if (!r.ok) { box.append(el("p", "error", errMsg(r))); return; }
        box.append(el("p", null, r.data.explanation));
        const ul = el("ul");
        ul.id = "preview-runs";
        for (const p of r.data.periods) {
          ul.append(el("li", null, p.name + ": " + p.from.slice(0, 16).replace("T", " ") + " to " +
            p.to.slice(0, 16).replace("T", " ") + ", runs " + p.runs_at.slice(0, 16).replace("T", " ")));
        }
        box.append(ul);
      }, 300);
    };
    form.addEventListener("input", update);
    form.addEventListener("change", update);
    update();
  }
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = form.querySelector("[data-error]");
      const ok = form.querySelector("[data-ok]");
      if (err) err.textContent = "";
      if (ok) ok.textContent = "";
      let body;
      try {
        body = form.dataset.bodyField
          ? JSON.parse(form.elements[form.dataset.bodyField].value)
          : formJson(form);
      } catch (e) {
        if (err) err.textContent = e.message.startsWith("JSON") ? "not valid JSON: " + e.message : e.message;
        return;
      }
      const [m, u] = form.dataset.api.split(" ");
      const r = await api(m, u, body);
      if (!r.ok) {
        if (err) err.textContent = errMsg(r);
        return;
      }
      if (form.dataset.after === "reload") return location.reload();
      if (form.dataset.after === "secret") {
        document.getElementById("secret-value").textContent = r.data.secret;
        document.getElementById("secret-once").hidden = false;
        form.reset();
        return;
      }
      if (ok) ok.textContent = "Saved.";
    });
  }

  async function testDelivery(form) {
    const box = document.getElementById("test-result");
    const list = document.getElementById("test-steps");
    box.hidden = false;
    list.replaceChildren(el("li", "muted", "Testing…"));
    let body;
    try { body = formJson(form); } catch (e) { list.replaceChildren(el("li", "error", e.message)); return; }
    const r = await api("POST", "/v1/settings/delivery/test", body);
    list.replaceChildren();
    if (!r.ok) { list.append(el("li", "error", errMsg(r))); return; }
    for (const s of r.data.steps) {
      const li = el("li", "step " + s.status);
      li.dataset.step = s.step;
      li.append(el("strong", null, s.step), " ", el("span", "badge " + s.status, s.status),
        " " + (s.kind ? "[" + s.kind + "] " : "") + s.detail);
      list.append(li);
    }
    const sup = r.data.supports;
    const word = (b) => (b === true ? "yes" : b === false ? "no" : "unknown");
    document.getElementById("test-supports").textContent =
      (r.data.ok ? "All steps passed. " : "A step failed. ") +
      "Conditional create: " + word(sup.conditional_create) + ", Object Lock: " + word(sup.object_lock) + ".";
  }

  // The export wizard. Its state lives in the URL (?step=2&name=...), so a reload or a
  // shared link shows the same step and values.
  const wiz = document.getElementById("wizard");
  if (!wiz) return;
  const f = wiz.elements;
  const LISTS = ["policy", "gateway", "consumer_group", "consumer", "provider", "model", "reason_code"];
  function syncUrl() {
    const p = new URLSearchParams();
    p.set("step", wiz.dataset.step);
    for (const k of ["name", "from", "to", "timezone", "format", "preset", "description", "min_severity"]) {
      if (f[k].value) p.set(k, f[k].value);
    }
    for (const o of f.decision.selectedOptions) p.append("decision", o.value);
    for (const k of LISTS) for (const o of f[k].selectedOptions) p.append(k, o.value);
    for (const c of wiz.querySelectorAll('input[name="include"]:checked')) p.append("include", c.value);
    if (!f.include_payloads.checked) p.set("include_payloads", "false");
    history.replaceState(null, "", "/exports/new?" + p.toString());
  }
  // Filter values offered from the data in the chosen period (selected ones kept).
  let valuesFor = "";
  async function loadValues() {
    const key = [f.from.value, f.to.value, f.timezone.value].join("|");
    if (key === valuesFor || !f.from.value || !f.to.value) return;
    valuesFor = key;
    for (const k of LISTS) {
      const sel = f[k];
      const r = await api("POST", "/v1/exports/values", {
        field: sel.dataset.values, from: f.from.value, to: f.to.value,
        timezone: f.timezone.value.trim() || "UTC",
      });
      if (!r.ok) continue;
      const have = new Set([...sel.options].map((o) => o.value));
      for (const v of r.data.values) {
        if (!have.has(v)) sel.append(new Option(v, v));
      }
    }
  }
  function body() {
    const filters = {};
    const dec = [...f.decision.selectedOptions].map((o) => o.value);
    if (dec.length) filters.decision = dec;
    if (f.min_severity.value) filters.min_severity = f.min_severity.value;
    for (const k of LISTS) {
      const v = [...f[k].selectedOptions].map((o) => o.value);
      if (v.length) filters[k] = v;
    }
    const b = {
      name: f.name.value.trim(), from: f.from.value, to: f.to.value,
      timezone: f.timezone.value.trim() || "UTC", format: f.format.value, filters,
      include: [...wiz.querySelectorAll('input[name="include"]:checked')].map((c) => c.value),
      include_payloads: f.include_payloads.checked,
    };
    if (f.description.value.trim()) b.description = f.description.value.trim();
    if (f.preset.value) b.preset = f.preset.value;
    return b;
  }
  function clearErrors() {
    for (const e of wiz.querySelectorAll("p.error")) e.textContent = "";
    for (const e of wiz.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  }
  const STEP1 = ["name", "from", "to", "timezone", "format", "preset", "description"];
  function showError(msg) {
    const field = msg.split(":")[0].trim().split(".")[0].split("[")[0];
    const target = document.getElementById("err-" + field);
    if (target) {
      target.textContent = msg;
      const input = document.getElementById(field);
      if (input) input.setAttribute("aria-invalid", "true");
      if (STEP1.includes(field)) show(1);
    } else {
      document.getElementById("err-general").textContent = msg;
    }
  }
  function show(step) {
    wiz.dataset.step = String(step);
    document.getElementById("step-1").hidden = step !== 1;
    document.getElementById("step-2").hidden = step !== 2;
    document.getElementById("step-1-label").toggleAttribute("aria-current", step === 1);
    document.getElementById("step-2-label").toggleAttribute("aria-current", step === 2);
    if (step === 1) document.getElementById("step-1-label").setAttribute("aria-current", "step");
    if (step === 2) document.getElementById("step-2-label").setAttribute("aria-current", "step");
    syncUrl();
    if (step === 2) { count(); loadValues(); }
  }
  let timer = null;
  let seq = 0;
  function count() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++seq;
      const out = document.getElementById("count");
      const note = document.getElementById("count-note");
      note.textContent = "counting…";
      const b = body();
      delete b.name;
      const r = await api("POST", "/v1/exports/preview", b);
      if (mine !== seq) return;
      if (r.ok) {
        out.textContent = String(r.data.records);
        note.textContent = "";
      } else {
        out.textContent = "";
        note.textContent = errMsg(r);
      }
    }, 250);
  }
  wiz.addEventListener("input", () => { syncUrl(); if (wiz.dataset.step === "2") count(); });
  wiz.addEventListener("change", () => { syncUrl(); if (wiz.dataset.step === "2") count(); });
  document.getElementById("next").addEventListener("click", () => {
    clearErrors();
    if (!f.name.value.trim()) return showError("name: give the export a name");
    if (!f.from.value) return showError("from: choose the first day");
    if (!f.to.value) return showError("to: choose the last day");
    show(2);
    f.decision.focus();
  });
  document.getElementById("back").addEventListener("click", () => show(1));
  for (const b of wiz.querySelectorAll("button[data-range]")) {
    b.addEventListener("click", () => {
      const tz = f.timezone.value.trim() || "UTC";
      let today;
      try {
        today = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
      } catch (_) {
        return showError("timezone: '" + tz + "' is not a timezone this browser knows");
      }
      const [y, m, d] = today.split("-").map(Number);
      const day = (yy, mm, dd) => new Date(Date.UTC(yy, mm - 1, dd)).toISOString().slice(0, 10);
      let from;
      let to;
      const r = b.dataset.range;
      if (r === "last-month") {
        from = day(y, m - 1, 1);
        to = day(y, m, 0);
      } else if (r === "last-quarter") {
        const q = Math.floor((m - 1) / 3);
        from = day(y, q * 3 - 2, 1);
        to = day(y, q * 3 + 1, 0);
      } else {
        to = day(y, m, d - 1);
        from = day(y, m, d - Number(r));
      }
      f.from.value = from;
      f.to.value = to;
      syncUrl();
    });
  }
  wiz.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const submit = document.getElementById("submit");
    submit.disabled = true;
    const r = await api("POST", "/v1/exports", body());
    submit.disabled = false;
    if (r.ok) return location.assign("/exports");
    showError(errMsg(r));
  });
  if (wiz.dataset.step === "2") { count(); loadValues(); }
})();
