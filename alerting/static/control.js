// The cabinet control page (alerting/control.py). No cookies: the bearer token lives in this tab's
// sessionStorage and goes with each call as an Authorization header, so no other site can make the
// browser send it. Everything shown is set as text (never as HTML).
"use strict";

(function () {
  const CABINET_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const TOKEN_KEY = "cascade.control.token";
  const page = JSON.parse(document.getElementById("cascade-texts").textContent);
  const texts = page.texts;
  const $ = (id) => document.getElementById(id);

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
  }

  function say(message, kind) {
    const status = $("status");
    status.textContent = message;
    status.className = kind || "";
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function call(method, path, body) {
    const headers = {"Authorization": "Bearer " + token(), "Accept": "application/json",
                     "Accept-Language": page.language};
    const init = {method: method, headers: headers, credentials: "omit", cache: "no-store",
                  redirect: "error", referrerPolicy: "no-referrer"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let answer = {};
    try {
      answer = await response.json();
    } catch (err) {
      answer = {error: response.statusText};
    }
    return {status: response.status, body: answer};
  }

  function cabinet() {
    return $("cabinet").value.trim();
  }

  function button(spec, slot) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = spec.label;
    b.dataset.command = spec.name;
    b.disabled = !spec.allowed;
    if (!spec.allowed) {
      b.title = texts.not_allowed;
    }
    b.addEventListener("click", () => send(spec, slot, b));
    return b;
  }

  function render(answer) {
    const slots = $("slots");
    slots.replaceChildren();
    const perSlot = answer.commands.filter((c) => c.slot);
    for (const s of answer.slots) {
      const row = document.createElement("tr");
      const number = document.createElement("td");
      number.textContent = String(s.slot);
      const level = document.createElement("td");
      level.textContent = String(s.level);
      level.className = "level-" + s.level;
      const actions = document.createElement("td");
      for (const spec of perSlot) {
        actions.append(button(spec, s.slot));
      }
      row.append(number, level, actions);
      slots.append(row);
    }
    const whole = $("cabinet-commands");
    whole.replaceChildren();
    for (const spec of answer.commands.filter((c) => !c.slot)) {
      const line = document.createElement("div");
      line.className = "command";
      if (spec.value) {
        const label = document.createElement("label");
        label.textContent = spec.label + " · " + fill(texts.value, {low: spec.value.min, high: spec.value.max});
        const input = document.createElement("input");
        input.type = "number";
        input.min = String(spec.value.min);
        input.max = String(spec.value.max);
        input.step = "1";
        input.id = "value-" + spec.name;
        label.htmlFor = input.id;
        line.append(label, input);
      }
      line.append(button(spec, null));
      whole.append(line);
    }
    $("commands").hidden = false;
  }

  async function load() {
    const cab = cabinet();
    if (!token()) {
      say(texts.no_token, "error");
      return;
    }
    if (!CABINET_ID.test(cab)) {
      $("commands").hidden = true;
      return;
    }
    history.replaceState(null, "", "?cabinet=" + encodeURIComponent(cab) + "&lang=" + page.language);
    try {
      const got = await call("GET", "/api/cabinets/" + encodeURIComponent(cab) + "/commands");
      if (got.status !== 200) {
        $("commands").hidden = true;
        say(fill(texts.refused, {status: got.status, error: got.body.error || ""}), "error");
        return;
      }
      render(got.body);
      say("", "");
    } catch (err) {
      say(fill(texts.unreachable, {error: String(err)}), "error");
    }
  }

  async function send(spec, slot, b) {
    const cab = cabinet();
    const reason = $("reason").value.trim();
    if (!reason) {
      say(texts.reason_missing, "error");
      $("reason").focus();
      return;
    }
    const body = {command: spec.name, reason: reason};
    if (slot !== null) {
      body.slot = slot;
    }
    if (spec.value) {
      const raw = $("value-" + spec.name).value;
      body.value = Number.parseInt(raw, 10);
    }
    if (spec.confirm) {
      const where = slot === null ? "" : fill(texts.slot_suffix, {slot: slot});
      if (!window.confirm(fill(texts.confirm, {command: spec.label, cabinet: cab, slot: where}))) {
        return;
      }
      body.confirm = true;
    }
    b.disabled = true;
    say(fill(texts.sending, {command: spec.label}), "");
    try {
      const got = await call("POST", "/api/cabinets/" + encodeURIComponent(cab) + "/commands", body);
      if (got.status === 200) {
        say(fill(texts.result_ok, {command: spec.label, readback: got.body.readback}), "ok");
      } else if (got.status === 502) {
        say(fill(texts.result_failed, {command: spec.label, error: got.body.error || ""}), "error");
      } else {
        say(fill(texts.refused, {status: got.status, error: got.body.error || ""}), "error");
      }
    } catch (err) {
      say(fill(texts.unreachable, {error: String(err)}), "error");
    } finally {
      b.disabled = !spec.allowed;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const query = new URLSearchParams(window.location.search);
    const wanted = query.get("cabinet") || "";
    if (CABINET_ID.test(wanted)) {
      $("cabinet").value = wanted;
    }
    $("language").href = "?lang=" + (page.language === "en" ? "zh" : "en") +
      (CABINET_ID.test(wanted) ? "&cabinet=" + encodeURIComponent(wanted) : "");
    $("save-token").addEventListener("click", () => {
      const value = $("token").value.trim();
      $("token").value = "";
      if (value) {
        sessionStorage.setItem(TOKEN_KEY, value);
      }
      load();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("commands").hidden = true;
      say("", "");
    });
    $("load").addEventListener("click", load);
    if (token() && $("cabinet").value) {
      load();
    }
  });
})();
