// The playground: GET /runtimes to list what can run, then one WebSocket per run on
// /execute/ws (SPEC §9): init, then queued/ready/stage/data/exit from the server, data/eof/signal
// from the page. Plain script, no build step, nothing loaded from elsewhere (docs/playground.md).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    runtime: $("runtime"), runtimeInfo: $("runtime-info"), key: $("api-key"),
    run: $("run"), stop: $("stop"), notice: $("notice"), editor: $("editor"),
    fileName: $("file-name"), status: $("status"), stages: $("stages"), output: $("output"),
    stdinForm: $("stdin-form"), stdin: $("stdin"), send: $("send"), eof: $("eof"),
    signal: $("signal"), sendSignal: $("send-signal"), metrics: $("metrics"),
  };

  // A program per language that reads a line and answers, chosen by the runtime's source file
  // extension (the API names runtimes freely, but the file name says the language).
  const SAMPLES = {
    py: 'name = input("What is your name? ")\nprint(f"Hello, {name}!")\n',
    c: '#include <stdio.h>\n#include <string.h>\n\nint main(void)\n{\n    char name[100];\n' +
       '    printf("What is your name? ");\n    fflush(stdout);\n' +
       '    if (!fgets(name, sizeof(name), stdin))\n        return 1;\n' +
       '    name[strcspn(name, "\\n")] = 0;\n    printf("Hello, %s!\\n", name);\n    return 0;\n}\n',
    cpp: '#include <iostream>\n#include <string>\n\nint main()\n{\n    std::string name;\n' +
         '    std::cout << "What is your name? " << std::flush;\n' +
         '    std::getline(std::cin, name);\n' +
         '    std::cout << "Hello, " << name << "!" << std::endl;\n}\n',
    sh: 'printf "What is your name? "\nread -r name\necho "Hello, $name!"\n',
    js: 'const readline = require("readline");\n' +
        'const rl = readline.createInterface({ input: process.stdin, output: process.stdout });\n' +
        'rl.question("What is your name? ", (name) => {\n' +
        '    console.log(`Hello, ${name}!`);\n    rl.close();\n});\n',
    java: 'import java.util.Scanner;\n\npublic class Main {\n' +
          '    public static void main(String[] args) {\n' +
          '        System.out.print("What is your name? ");\n        System.out.flush();\n' +
          '        String name = new Scanner(System.in).nextLine();\n' +
          '        System.out.println("Hello, " + name + "!");\n    }\n}\n',
    go: 'package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n\t"strings"\n)\n\nfunc main() {\n' +
        '\tfmt.Print("What is your name? ")\n' +
        '\tname, _ := bufio.NewReader(os.Stdin).ReadString(\'\\n\')\n' +
        '\tfmt.Printf("Hello, %s!\\n", strings.TrimSpace(name))\n}\n',
    rs: 'use std::io::{self, Write};\n\nfn main() {\n    print!("What is your name? ");\n' +
        '    io::stdout().flush().unwrap();\n    let mut name = String::new();\n' +
        '    io::stdin().read_line(&mut name).unwrap();\n' +
        '    println!("Hello, {}!", name.trim());\n}\n',
    rb: 'print "What is your name? "\n$stdout.flush\nname = gets.chomp\nputs "Hello, #{name}!"\n',
    pl: '$| = 1;\nprint "What is your name? ";\nchomp(my $name = <STDIN>);\nprint "Hello, $name!\\n";\n',
    php: '<?php\necho "What is your name? ";\n$name = trim(fgets(STDIN));\necho "Hello, $name!\\n";\n',
    lua: 'io.write("What is your name? ")\nio.flush()\nlocal name = io.read("l")\n' +
         'print("Hello, " .. name .. "!")\n',
    ts: 'const readline = require("readline");\n' +
        'const rl = readline.createInterface({ input: process.stdin, output: process.stdout });\n' +
        'rl.question("What is your name? ", (name: string) => {\n' +
        '    console.log(`Hello, ${name}!`);\n    rl.close();\n});\n',
  };

  const KEY_STORE = "envicutor.apiKey";
  let socket = null;     // the run's WebSocket, while a run is on
  let ready = false;     // a slot is ours: the server reads what we send
  let stdinOpen = false; // stdin not yet closed with eof
  let lastSample = null; // the sample the editor holds, so a change of runtime may replace it
  let lastStream = null; // the stream of the output's last span, to append to it

  // ---- API key ----------------------------------------------------------------------------

  // sessionStorage: a reload keeps the key, closing the tab forgets it.
  el.key.value = sessionStorage.getItem(KEY_STORE) || "";
  el.key.addEventListener("change", () => {
    const k = el.key.value.trim();
    if (k) sessionStorage.setItem(KEY_STORE, k); else sessionStorage.removeItem(KEY_STORE);
    loadRuntimes();
  });

  function authHeaders() {
    const k = el.key.value.trim();
    return k ? { "X-Auth-Token": k } : {};
  }

  function notice(text) {
    el.notice.textContent = text || "";
    el.notice.hidden = !text;
  }

  async function apiGet(path) {
    const r = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON: the status says enough */ }
    if (!r.ok) {
      const msg = body && body.message ? body.message : `${r.status} ${r.statusText}`;
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  // ---- runtimes ---------------------------------------------------------------------------

  async function loadRuntimes() {
    el.runtime.disabled = true;
    let list;
    try {
      list = await apiGet("/runtimes");
    } catch (e) {
      el.runtime.replaceChildren(new Option("—"));
      updateButtons();
      notice(e.status === 401 || e.status === 403
        ? `${e.message}. Enter an API key above.` : `Could not list runtimes: ${e.message}`);
      return;
    }
    notice(list.length ? "" : "No runtime is installed on this server yet.");
    const previous = el.runtime.value;
    el.runtime.replaceChildren(...list.map((r) => new Option(`${r.name}  (#${r.id})`, String(r.id))));
    const keep = list.find((r) => String(r.id) === previous);
    const python = list.find((r) => /python/i.test(r.name));
    if (keep) el.runtime.value = previous;
    else if (python) el.runtime.value = String(python.id);
    el.runtime.disabled = list.length === 0;
    updateButtons();
    if (list.length) runtimeChosen();
  }

  async function runtimeChosen() {
    const id = el.runtime.value;
    el.runtimeInfo.textContent = "";
    el.fileName.textContent = "";
    let info;
    try {
      info = await apiGet(`/runtimes/${encodeURIComponent(id)}`);
    } catch (e) {
      el.runtimeInfo.textContent = e.message;
      return;
    }
    if (el.runtime.value !== id) return; // chosen again meanwhile
    const file = info.source_file_name || "";
    el.fileName.textContent = file;
    const parts = [info.compile_script ? "compiled" : "interpreted"];
    if (info.provider) parts.push(info.provider === "host" ? "host toolchain" : info.provider);
    el.runtimeInfo.textContent = parts.join(" · ");
    const ext = file.includes(".") ? file.split(".").pop().toLowerCase() : "";
    const sample = SAMPLES[ext];
    // Only replace what the user has not written: an empty editor or an untouched sample.
    if (sample && (el.editor.value.trim() === "" || el.editor.value === lastSample)) {
      el.editor.value = sample;
      lastSample = sample;
    }
  }

  el.runtime.addEventListener("change", runtimeChosen);

  // ---- the editor ---------------------------------------------------------------------------

  let escaped = false; // Esc pressed: the next Tab moves focus, as keyboard users expect
  el.editor.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { escaped = true; return; }
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      if (!el.run.disabled) startRun();
      return;
    }
    if (ev.key !== "Tab" || escaped) { escaped = false; return; }
    ev.preventDefault();
    const t = el.editor, s = t.selectionStart, e = t.selectionEnd, v = t.value;
    const lineStart = v.lastIndexOf("\n", s - 1) + 1;
    if (s === e && !ev.shiftKey) {
      t.setRangeText("    ", s, e, "end");
    } else {
      // indent or dedent every line the selection touches
      const block = v.slice(lineStart, e);
      const lines = block.split("\n");
      const changed = ev.shiftKey
        ? lines.map((l) => l.replace(/^( {1,4}|\t)/, ""))
        : lines.map((l) => "    " + l);
      const text = changed.join("\n");
      t.setRangeText(text, lineStart, e, "preserve");
      t.selectionStart = s === e ? Math.max(lineStart, s + (text.length - block.length)) : lineStart;
      t.selectionEnd = lineStart + text.length;
    }
    t.dispatchEvent(new Event("input"));
  });

  // ---- output -----------------------------------------------------------------------------

  const MAX_OUTPUT_CHARS = 2000000; // the page stays responsive; the server caps output too
  let outputChars = 0;

  function write(stream, text) {
    if (!text) return;
    const atBottom = el.output.scrollTop + el.output.clientHeight >= el.output.scrollHeight - 4;
    if (outputChars + text.length > MAX_OUTPUT_CHARS) {
      if (outputChars >= MAX_OUTPUT_CHARS) return;
      text = text.slice(0, MAX_OUTPUT_CHARS - outputChars) + "\n[output cut by the page]\n";
    }
    outputChars += text.length;
    let span = el.output.lastElementChild;
    if (lastStream !== stream || !span) {
      span = document.createElement("span");
      span.className = stream;
      el.output.append(span);
      lastStream = stream;
    }
    span.append(text);
    if (atBottom) el.output.scrollTop = el.output.scrollHeight;
  }

  function system(text) {
    const last = el.output.textContent;
    write("sys", (last && !last.endsWith("\n") ? "\n" : "") + text + "\n");
  }

  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text;
  }

  function stageItem(stage) {
    let li = el.stages.querySelector(`[data-stage="${stage}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.stage = stage;
      li.textContent = stage;
      el.stages.append(li);
    }
    return li;
  }

  // ---- metrics ----------------------------------------------------------------------------

  const STATUS_TEXT = { RE: "runtime error", SG: "killed by a signal", TO: "time limit", XX: "internal error" };

  function seconds(v) {
    if (typeof v !== "number") return "—";
    return v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(3)} s`;
  }

  function kilobytes(v) {
    if (typeof v !== "number") return "—";
    return v >= 10240 ? `${(v / 1024).toFixed(1)} MB` : `${v} KB`;
  }

  function showMetrics(m) {
    const ok = m.exit_status === null || m.exit_status === undefined;
    const rows = [
      ["status", ok ? "OK" : `${m.exit_status} (${STATUS_TEXT[m.exit_status] || "?"})`, ok ? "ok" : "bad"],
      ["exit_code", m.exit_code === null || m.exit_code === undefined ? "—" : String(m.exit_code)],
      ["exit_signal", m.exit_signal === null || m.exit_signal === undefined ? "—" : String(m.exit_signal)],
      ["cpu_time", seconds(m.cpu_time)],
      ["wall_time", seconds(m.wall_time)],
      ["memory", kilobytes(m.memory)],
    ];
    if (m.memory_limit_exceeded) rows.push(["memory_limit_exceeded", "yes", "bad"]);
    if (m.exit_message) rows.push(["exit_message", m.exit_message]);
    const table = document.createElement("table");
    table.dataset.stage = m.stage;
    table.createCaption().textContent = m.stage;
    for (const [field, value, cls] of rows) {
      const tr = table.insertRow();
      const th = document.createElement("th");
      th.textContent = field.replace(/_/g, " ");
      const td = document.createElement("td");
      td.dataset.field = field;
      td.textContent = value;
      if (cls) td.className = cls;
      tr.append(th, td);
    }
    el.metrics.append(table);
    stageItem(m.stage).dataset.state = ok ? "ok" : "failed";
  }

  // ---- a run --------------------------------------------------------------------------------

  function updateButtons() {
    const running = socket !== null;
    el.run.disabled = running || el.runtime.disabled || !el.runtime.value;
    el.stop.disabled = !running;
    const canType = running && ready && stdinOpen;
    el.stdin.disabled = el.send.disabled = el.eof.disabled = !canType;
    el.signal.disabled = el.sendSignal.disabled = !(running && ready);
  }

  function send(msg) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
  }

  function startRun() {
    if (socket) return;
    el.output.replaceChildren();
    el.stages.replaceChildren();
    el.metrics.replaceChildren();
    outputChars = 0;
    lastStream = null;
    ready = false;
    stdinOpen = true;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/execute/ws`);
    socket = ws;
    let finished = false; // the last exit came, or an error: the close is expected
    let failed = false;
    setStatus("queued", "Connecting…");
    updateButtons();

    ws.addEventListener("open", () => {
      const init = { type: "init", runtime_id: Number(el.runtime.value), source_code: el.editor.value };
      const k = el.key.value.trim();
      if (k) init.token = k;
      ws.send(JSON.stringify(init));
    });

    ws.addEventListener("message", (ev) => {
      if (ws !== socket) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      switch (m.type) {
        case "queued":
          setStatus("queued", m.position === 0 ? "Waiting: next in line"
            : `Waiting: ${m.position} ahead in the queue`);
          break;
        case "ready":
          ready = true;
          setStatus("running", "Starting…");
          updateButtons();
          el.stdin.focus();
          break;
        case "stage":
          for (const li of el.stages.querySelectorAll("[data-state=active]")) li.dataset.state = "ok";
          stageItem(m.stage).dataset.state = "active";
          setStatus("running", m.stage === "run" ? "Running" : m.stage === "compile" ? "Compiling" : "Extracting");
          break;
        case "data":
          write(m.stream === "stderr" ? "stderr" : "stdout", m.data);
          break;
        case "exit":
          showMetrics(m);
          if (m.exit_status) failed = true;
          break;
        case "error":
          finished = true;
          failed = true;
          system(m.message || "error");
          setStatus("error", "Error");
          break;
      }
    });

    ws.addEventListener("close", (ev) => {
      if (ws !== socket) return;
      socket = null;
      ready = false;
      if (ev.code === 1000 && !failed) {
        setStatus("done", "Finished");
      } else if (ev.code === 1000) {
        setStatus("error", "Finished with an error");
      } else if (!finished) {
        setStatus("error", "Disconnected");
        system(`connection closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
      }
      for (const li of el.stages.querySelectorAll("[data-state=active]")) li.dataset.state = "failed";
      updateButtons();
    });
  }

  function stopRun() {
    if (!socket) return;
    if (ready) {
      send({ type: "signal", signal: "SIGKILL" });
      system("SIGKILL sent");
    } else {
      // Before a slot is ours only a close may be sent; closing drops the waiting submission.
      const ws = socket;
      socket = null;
      ws.close(1000);
      setStatus("idle", "Cancelled");
      updateButtons();
    }
  }

  function sendLine() {
    if (!ready || !stdinOpen) return;
    const line = el.stdin.value;
    send({ type: "data", stream: "stdin", data: line + "\n" });
    write("stdin", line + "\n"); // a terminal echoes what is typed
    el.stdin.value = "";
  }

  function sendEof() {
    if (!ready || !stdinOpen) return;
    if (el.stdin.value) sendLine();
    send({ type: "eof" });
    stdinOpen = false;
    system("input closed");
    updateButtons();
  }

  el.run.addEventListener("click", startRun);
  el.stop.addEventListener("click", stopRun);
  el.stdinForm.addEventListener("submit", (ev) => { ev.preventDefault(); sendLine(); });
  el.eof.addEventListener("click", sendEof);
  el.stdin.addEventListener("keydown", (ev) => {
    if (ev.key === "d" && ev.ctrlKey) { ev.preventDefault(); sendEof(); }
  });
  el.sendSignal.addEventListener("click", () => {
    send({ type: "signal", signal: el.signal.value });
    system(`${el.signal.value} sent`);
  });

  loadRuntimes();
})();
