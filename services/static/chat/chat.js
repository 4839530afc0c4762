// The web chat page: messages through /chat/api (the services API relays them to Rasa), choices as
// buttons, links opened in place, hold-to-talk recording, answers read aloud, 长辈模式, family proxy.
// No libraries, nothing from elsewhere.
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var log = $("log"), text = $("text"), statusLine = $("status"), mic = $("mic");
  var root = document.documentElement;
  var initial = JSON.parse($("initial").textContent || "{}");
  var acting = null; // {id, who}: the family member this page acts for, if any
  try { acting = JSON.parse(sessionStorage.getItem("heze_acting") || "null"); } catch (e) { acting = null; }

  function api(path, options) {
    options = options || {};
    options.headers = Object.assign({ "X-Heze-Chat": "1" }, options.headers || {});
    options.credentials = "same-origin";
    return fetch("/chat/api/" + path, options).then(function (resp) {
      var kind = resp.headers.get("content-type") || "";
      var body = kind.indexOf("json") >= 0 ? resp.json() : resp.blob();
      return body.then(function (data) {
        if (!resp.ok) {
          var err = new Error((data && data.error) || "网络不好，请稍后再试。");
          err.code = data && data.code;
          throw err;
        }
        return data;
      });
    }, function () { throw new Error("网络不好，没有发出去，请稍后再试。"); });
  }

  function elder() { return root.classList.contains("elder"); }

  // Text with its links made links (only http and https; everything else stays text).
  function fill(node, said) {
    var re = /(https?:\/\/[^\s，。；、）)]+|\/(?:guide|pay)\/[A-Za-z0-9_\-]+)/g, last = 0, m;
    while ((m = re.exec(said)) !== null) {
      node.appendChild(document.createTextNode(said.slice(last, m.index)));
      var a = document.createElement("a");
      a.href = m[0];
      a.textContent = m[0].indexOf("/pay/") >= 0 ? "打开缴费页面" : m[0].indexOf("/guide/") >= 0 ? "查看完整办事指南" : m[0];
      node.appendChild(a);
      last = m.index + m[0].length;
    }
    node.appendChild(document.createTextNode(said.slice(last)));
  }

  function retire() { // choices answer only the question that offered them
    log.querySelectorAll(".choices button").forEach(function (b) { b.disabled = true; });
  }

  function show(from, said, buttons) {
    var div = document.createElement("div");
    div.className = "msg " + from;
    var words = document.createElement("span");
    words.className = "text";
    fill(words, said || "");
    div.appendChild(words);
    if (from === "bot") { retire(); }
    if (from === "bot" && buttons && buttons.length) {
      var row = document.createElement("div");
      row.className = "choices";
      buttons.forEach(function (b) {
        var btn = document.createElement("button");
        btn.type = "button";
        btn.textContent = b.title;
        btn.addEventListener("click", function () { send(b.payload, b.title); });
        row.appendChild(btn);
      });
      div.appendChild(row);
    }
    if (from === "bot" && said) {
      var read = document.createElement("button");
      read.type = "button";
      read.className = "read";
      read.textContent = "朗读";
      read.setAttribute("aria-label", "朗读这条回答");
      read.addEventListener("click", function () { readAloud(said, read); });
      div.appendChild(read);
    }
    log.appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }

  function refresh() { // the conversation as the server has it (a slow answer has arrived by now)
    api("history").then(function (data) {
      log.textContent = "";
      showAll(data.messages || []);
      tell("");
    }, function (err) { tell(err.message); });
  }

  function showAll(messages) {
    messages.forEach(function (m) {
      if (m.from === "user") { show("user", m.text); return; }
      if (m.text || (m.buttons && m.buttons.length)) { show("bot", m.text, m.buttons); }
    });
  }

  function tell(said, retry, label) {
    statusLine.textContent = said || "";
    if (retry) {
      var again = document.createElement("button");
      again.type = "button";
      again.textContent = label || "重新发送";
      again.addEventListener("click", retry);
      statusLine.appendChild(again);
    }
  }

  var sending = false;
  // Resolves true when the assistant answered; false leaves what was typed to send again.
  function send(message, shown) {
    if (sending) { return Promise.resolve(false); }
    sending = true;
    var bubble = !message.startsWith("/") || shown ? show("user", shown || message) : null;
    tell("正在回复……");
    var body = { message: message };
    if (shown) { body.shown = shown; }
    if (acting) { body.acting_for = acting.id; }
    return api("message", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (data) {
        tell("");
        showAll((data.messages || []).map(function (m) { return Object.assign({ from: "bot" }, m); }));
        return true;
      }, function (err) {
        if (err.code === "slow") { // Rasa has it: show the answer when it comes, never send it twice
          tell(err.message);
          setTimeout(refresh, 8000);
          return true;
        }
        if (bubble) { bubble.remove(); } // not sent: what was typed goes back into the box
        if (err.code === "proxy_ended") { stopActing(); tell(err.message); return false; }
        if (err.code === "signed_out") { tell(err.message, function () { location.reload(); }, "重新进入"); return false; }
        tell(err.message, function () { tell(""); send(message, shown); });
        return false;
      })
      .then(function (ok) { sending = false; return ok; });
  }

  function sendTyped(said) {
    if (!said || sending) { return; }
    if (text.value.trim() === said) { text.value = ""; }
    send(said).then(function (ok) { if (!ok && !text.value) { text.value = said; } });
  }
  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    sendTyped(text.value.trim());
  });
  text.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendTyped(text.value.trim()); }
  });

  // 朗读: the voice gateway's Mandarin voice, slower in 长辈模式.
  var player = new Audio(), playingUrl = null;
  player.addEventListener("ended", function () { if (playingUrl) { URL.revokeObjectURL(playingUrl); playingUrl = null; } });
  function readAloud(said, button) {
    player.pause();
    player.play().catch(function () { return null; }); // unlocked inside the tap (phones allow sound only then)
    button.disabled = true;
    api("tts", { method: "POST", headers: { "Content-Type": "application/json" },
                 body: JSON.stringify({ text: said, slow: elder() }) })
      .then(function (blob) {
        if (playingUrl) { URL.revokeObjectURL(playingUrl); }
        playingUrl = URL.createObjectURL(blob);
        player.src = playingUrl;
        return player.play();
      })
      .catch(function (err) { tell(err.code !== undefined && err.message ? err.message : "朗读暂时用不了。"); })
      .then(function () { setTimeout(function () { button.disabled = false; }, 800); });
  }

  // 长辈模式: remembered in a cookie, so the page comes back large before any script runs.
  $("elder").addEventListener("click", function () {
    var on = !elder();
    root.classList.toggle("elder", on);
    this.setAttribute("aria-pressed", on ? "true" : "false");
    document.cookie = "heze_elder=" + (on ? "1" : "0") + "; path=/chat; max-age=31536000; samesite=lax";
  });

  // Hold to talk: MediaRecorder while the button is held, then the gateway's recogniser.
  var recorder = null, chunks = [], stream = null, pressedAt = 0, tapped = false;
  function release() { // the phone's "recording" sign goes off between questions
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); stream = null; }
  }
  function startTalking(e) {
    if (e) { e.preventDefault(); }
    if (tapped) { tapped = false; stopTalking(); return; } // 长辈模式: the second tap ends it
    if (recorder || sending) { return; }
    pressedAt = Date.now();
    var getting = navigator.mediaDevices.getUserMedia({ audio: true });
    mic.classList.add("recording");
    mic.textContent = elder() ? "说完 点一下" : "松开 结束";
    getting.then(function (s) {
      stream = s;
      if (!mic.classList.contains("recording")) { return; } // let go before the microphone opened
      chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.addEventListener("dataavailable", function (ev) { if (ev.data.size) { chunks.push(ev.data); } });
      recorder.addEventListener("stop", function () {
        var blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
        recorder = null;
        release();
        transcribe(blob);
      });
      recorder.start();
      tell("正在听，说完松开按钮。");
    }, function () {
      tapped = false;
      stopTalking();
      tell("用不了话筒。请在设置里允许使用麦克风，或者打字。");
    });
  }
  function letGo(e) {
    if (e) { e.preventDefault(); }
    if (!mic.classList.contains("recording") || tapped) { return; }
    if (elder() && Date.now() - pressedAt < 600) { tapped = true; return; } // a tap, not a hold: keep listening
    stopTalking();
  }
  function stopTalking() {
    mic.classList.remove("recording");
    mic.textContent = "按住 说话";
    if (recorder && recorder.state === "recording") { recorder.stop(); }
  }
  function transcribe(blob) {
    tell("正在识别……");
    api("asr", { method: "POST", headers: { "Content-Type": blob.type }, body: blob })
      .then(function (data) {
        if (!data.text) { tell("没听清，请再说一遍。"); return; }
        tell("");
        send(data.text).then(function (ok) { if (!ok && !text.value) { text.value = data.text; } });
      }, function (err) { tell(err.message); });
  }
  if (window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    mic.hidden = false;
    mic.addEventListener("pointerdown", startTalking);
    ["pointerup", "pointercancel", "pointerleave"].forEach(function (n) { mic.addEventListener(n, letGo); });
    mic.addEventListener("contextmenu", function (e) { e.preventDefault(); });
    mic.addEventListener("keydown", function (e) { if ((e.key === " " || e.key === "Enter") && !e.repeat) { startTalking(e); } });
    mic.addEventListener("keyup", function (e) { if (e.key === " " || e.key === "Enter") { letGo(e); } });
  }

  // 子女代办
  // A grant from the list, or the {id, who} this tab kept (a reload, or back from a payment page).
  function setActing(grant) {
    acting = !grant ? null : grant.who ? grant : { id: grant.id, who: grant.relation + "（" + grant.elder + "）" };
    if (acting) { sessionStorage.setItem("heze_acting", JSON.stringify(acting)); }
    else { sessionStorage.removeItem("heze_acting"); }
    $("acting").hidden = !acting;
    $("acting-who").textContent = acting ? "正在为" + acting.who + "办事" : "";
  }
  function stopActing() { setActing(null); }
  $("acting-stop").addEventListener("click", function () { stopActing(); show("note", "已回到为自己办事。"); });

  var STATUS = { pending: "等家人打电话确认", active: "可以代办", ended: "已结束", expired: "已过期" };
  function listGrants() {
    return api("family").then(function (data) {
      var list = $("grants");
      list.textContent = "";
      if (!data.verified) {
        $("family-note").textContent = "为家人代办要在微信里打开本页面（公众号或小程序的“在线咨询”）。";
        $("family-form").hidden = true;
        return;
      }
      data.grants.forEach(function (g) {
        var li = document.createElement("li");
        var what = document.createElement("span");
        what.textContent = g.relation + " " + g.elder + " · " + (STATUS[g.status] || g.status) +
          (g.status === "active" && g.expires_on ? "，" + g.expires_on + "到期" : "");
        li.appendChild(what);
        if (g.status === "active") {
          var use = document.createElement("button");
          use.type = "button";
          use.textContent = "为" + g.relation + "办事";
          use.addEventListener("click", function () {
            setActing(g);
            $("family-body").hidden = true;  // the conversation gets the screen back
            $("family-open").setAttribute("aria-expanded", "false");
            show("note", "现在为" + g.relation + "（" + g.elder + "）办事，查进度、缴费、反映问题都算代办，会记录下来。");
            text.focus();
          });
          li.appendChild(use);
        }
        var end = document.createElement("button");
        end.type = "button";
        end.textContent = "结束代办";
        end.addEventListener("click", function () {
          if (!end.classList.contains("sure")) { // a second tap, so a slip of the finger ends nothing
            end.classList.add("sure");
            end.textContent = "确定结束？再点一次";
            return;
          }
          api("family/" + g.id + "/end", { method: "POST" }).then(function () {
            if (acting && acting.id === g.id) { stopActing(); }
            listGrants();
          }, function (err) { $("family-told").textContent = err.message; });
        });
        li.appendChild(end);
        list.appendChild(li);
      });
      if (acting && !data.grants.some(function (g) { return g.id === acting.id && g.status === "active"; })) { stopActing(); }
    }, function (err) { $("family-told").textContent = err.message; });
  }
  $("family-open").addEventListener("click", function () {
    var open = $("family-body").hidden;
    $("family-body").hidden = !open;
    this.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) { listGrants(); }
  });
  $("family-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var told = $("family-told"), button = this.querySelector("button");
    if (button.disabled) { return; }
    button.disabled = true; // one request, however often it is tapped
    told.textContent = "正在发送……";
    api("family", { method: "POST", headers: { "Content-Type": "application/json" },
                    body: JSON.stringify({ phone: $("elder-phone").value, relation: $("relation").value }) })
      .then(function (data) { told.textContent = data.told; listGrants(); },
            function (err) { told.textContent = err.message; })
      .then(function () { button.disabled = false; });
  });

  setActing(acting);
  showAll(initial.messages || []);
  if (!(initial.messages || []).length) {
    tell("助手暂时连不上。", function () { location.reload(); }, "重新连接");
  }
})();
