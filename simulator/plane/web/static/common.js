// The console's shared helpers (both pages): DOM building, Beijing times, yuan, short ids with
// copy-on-click, row menus, the status line, JSON calls to /sim/, and live updates (pushed
// over /sim/console/events, polling only when the push fails). Plain script, no build step;
// every value is written with textContent.
(function () {
  'use strict';

  var EVENTS_URL = '/sim/console/events';
  var HELLO_WAIT_MS = 5000;
  var SHARED = 'sim-console-events';   // the lock and channel of the tabs' one stream
  var BEIJING = 8 * 3600;         // every time shown is Beijing's (UTC+8), as WeChat's own

  function $(selector) { return document.querySelector(selector); }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    attrs = attrs || {};
    for (key in attrs) {
      if (!Object.prototype.hasOwnProperty.call(attrs, key) || attrs[key] == null) continue;
      if (key === 'text') node.textContent = String(attrs[key]);
      else if (key === 'className') node.className = attrs[key];
      else node.setAttribute(key, String(attrs[key]));
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child == null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function td(content, className) { return el('td', { className: className || null }, content); }

  function code(text) { return el('code', { text: text == null ? '' : text }); }

  function clip(text, n) {
    text = text == null ? '' : String(text);
    return text.length > n ? text.slice(0, n - 1) + '…' : text;
  }

  // --- time: epoch seconds or ISO 8601, shown in Beijing time ---------------------------
  function seconds(ts) {
    if (typeof ts === 'string') return Date.parse(ts) / 1000;
    return ts;
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  function beijing(ts) { return new Date((seconds(ts) + BEIJING) * 1000); }

  function clockTime(ts) {
    if (!ts) return '';
    var d = beijing(ts);
    return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  }

  function dateTime(ts) {
    if (!ts) return '';
    var d = beijing(ts);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) +
      ' ' + clockTime(ts);
  }

  function duration(s) {
    s = Math.abs(s);
    if (s < 1) return Math.round(s * 1000) + ' ms';
    if (s < 90) return (Math.round(s * 10) / 10) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    if (s < 172800) return (Math.round(s / 360) / 10) + ' h';
    return (Math.round(s / 8640) / 10) + ' days';
  }

  // "12:00:03 (in 14 s)": the relative part is refreshed by updateRelative, so rows whose
  // data did not change are not rebuilt.
  function when(ts, pastWord) {
    if (!ts) return '';
    return el('span', { className: 'when', title: dateTime(ts) + ' Beijing (UTC+8)' },
      el('span', { className: 't', text: clockTime(ts) }), ' ',
      el('span', { className: 'rel', 'data-at': seconds(ts), 'data-past': pastWord || '' }));
  }

  function updateRelative(now) {
    document.querySelectorAll('span.rel').forEach(function (span) {
      var left = parseFloat(span.getAttribute('data-at')) - now;
      var past = span.getAttribute('data-past');
      span.textContent = left > 0 ? '(in ' + duration(left) + ')' :
        '(' + (past ? past + ' ' : '') + duration(left) + ' ago)';
      span.classList.toggle('past', left <= 0);
    });
  }

  // --- money and ids ---------------------------------------------------------------------
  function yuan(fen) {
    fen = Number(fen);
    if (!isFinite(fen)) return '';
    var sign = fen < 0 ? '-' : '';
    var abs = Math.abs(fen);
    return sign + '¥' + Math.floor(abs / 100) + '.' + pad(abs % 100) + ' (' + fen + ' fen)';
  }

  function shortId(id) {
    id = id == null ? '' : String(id);
    return id.length > 13 ? id.slice(0, 6) + '…' + id.slice(-4) : id;
  }

  // an order's page; with its merchant, as two merchants may use one number (409 without)
  function orderUrl(no, mch) {
    return '/sim/console/orders/' + encodeURIComponent(no) +
      (mch ? '?mch_id=' + encodeURIComponent(mch) : '');
  }

  // An id shortened, the whole id in its title; a click copies it (a "copied" mark beside).
  function idButton(id, className) {
    if (!id) return '';
    return el('button', { type: 'button', className: 'id copy' + (className ? ' ' + className : ''),
      title: id + ' (click to copy)', 'data-copy': id }, shortId(id));
  }

  // An order number: a link to its page (the merchant's, when known) and a copy button.
  function orderRef(no, mch) {
    if (!no) return '';
    return el('span', { className: 'order-ref' },
      el('a', { href: orderUrl(no, mch), className: 'order-link', title: no + ': its page' },
        shortId(no)),
      el('button', { type: 'button', className: 'copy-icon', title: 'copy ' + no,
        'aria-label': 'copy ' + no, 'data-copy': no }, 'copy'));
  }

  function copied(button, ok) {
    var mark = button.nextElementSibling;
    if (!mark || !mark.classList.contains('copied')) {
      mark = el('span', { className: 'copied', role: 'status' });
      button.after(mark);
    }
    mark.textContent = ok ? 'copied' : 'copy failed';
    clearTimeout(mark._timer);
    mark._timer = setTimeout(function () { mark.remove(); }, 1500);
  }

  function onCopy(event) {
    var button = event.target.closest('[data-copy]');
    if (!button) return false;
    var text = button.getAttribute('data-copy');
    var done = navigator.clipboard && navigator.clipboard.writeText ?
      navigator.clipboard.writeText(text) : Promise.reject(new Error('no clipboard'));
    done.then(function () { copied(button, true); }, function () { copied(button, false); });
    return true;
  }

  // --- row menus: <details class="menu">, closed by Escape or a click elsewhere ------------
  function menu(label, name, items) {
    return el('details', { className: 'menu', 'data-menu': name },
      el('summary', { title: label }, label),
      el('div', { className: 'menu-items', role: 'group', 'aria-label': label }, items));
  }

  function menuGroup(title, buttons) {
    return el('div', { className: 'menu-group' }, el('div', { className: 'menu-title',
      text: title }), buttons);
  }

  function closeMenus(except) {
    document.querySelectorAll('details.menu[open]').forEach(function (d) {
      if (d !== except) d.open = false;
    });
  }

  function onMenuKey(event) {
    if (event.key !== 'Escape') return;
    var open = event.target.closest && event.target.closest('details.menu[open]');
    closeMenus();
    if (open) open.querySelector('summary').focus();
  }

  // --- the status line: the connection and the last action's result ----------------------
  function setConnection(state, text) {
    var c = $('#connection');
    if (!c) return;
    c.setAttribute('data-state', state);
    c.textContent = text;
  }

  function say(text, ok) {
    var m = $('#message');
    m.textContent = text;
    m.setAttribute('data-ok', ok ? 'true' : 'false');
  }

  function errorText(status, data) {
    if (data && data.error) return data.error.code + ': ' + data.error.message;
    if (data && data.errMsg) return data.errMsg;
    return 'HTTP ' + status;
  }

  // JSON in and out; resolves {status, data}.
  function send(method, url, body) {
    var init = { method: method, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: resp.status, data: data };
      });
    });
  }

  function act(button, method, url, body, describe, after) {
    button.disabled = true;
    say('…', true);
    return send(method, url, body).then(function (res) {
      var ok = res.status >= 200 && res.status < 300;
      say(ok ? describe(res.data) : 'Failed: ' + errorText(res.status, res.data), ok);
    }, function (err) {
      say('Failed: ' + err.message, false);
    }).then(function () {
      button.disabled = false;
      if (after) after();
    });
  }

  // --- live updates ------------------------------------------------------------------------
  // ?poll=<ms> (100..10000): the polling interval when the push fails; ?poll=0: push only.
  function pollSetting() {
    var raw = new URLSearchParams(window.location.search).get('poll');
    if (raw === '0') return 0;
    var asked = Number(raw);
    return raw && asked >= 100 && asked <= 10000 ? asked : 1000;
  }

  // load(): a promise of the data's revision (undefined when unknown). Fetches are
  // coalesced: one in flight, at most one more queued behind it.
  function live(load) {
    var pollMs = pollSetting();
    var revision, source = null, helloTimer = null, pollTimer = null;
    var inFlight = false, again = false, mode = 'connecting';

    function describeMode() {
      if (mode === 'push') setConnection('live', 'live: updates pushed');
      else if (mode === 'poll') setConnection('polling', 'polling every ' + duration(pollMs / 1000) +
        ' (push unavailable: ' + live.reason + ')');
    }

    function refresh() {
      if (inFlight) { again = true; return; }
      inFlight = true;
      clearTimeout(pollTimer);
      Promise.resolve().then(load).then(function (rev) {
        revision = rev;
        $('#updated').textContent = 'updated ' + clockTime(Date.now() / 1000);
        describeMode();
      }, function (err) {
        setConnection('down', 'simulator unreachable (' + err.message + '); retrying');
      }).then(function () {
        inFlight = false;
        if (again) { again = false; refresh(); return; }
        if (mode === 'poll') pollTimer = setTimeout(refresh, pollMs);
      });
    }

    function fallBack(reason) {
      clearTimeout(helloTimer);
      if (source) source.close();
      source = null;
      live.reason = reason;
      if (!pollMs) {
        mode = 'off';
        setConnection('down', 'push failed (' + reason + '); polling is off (?poll=0)');
        return;
      }
      mode = 'poll';
      describeMode();
      refresh();
    }

    function newer(data) { return !(data && data.revision <= revision); }

    // The stream's events, from this tab's EventSource or relayed by the tab holding it.
    function heard(type, data) {
      if (type === 'hello') {
        clearTimeout(helloTimer);
        mode = 'push';
        describeMode();
        if (newer(data)) refresh();
      } else if (type === 'change') {
        if (newer(data)) refresh();
      } else if (type === 'failed') {
        fallBack(data);
      } else if (type === 'lost') {
        setConnection('down', 'event stream lost; reconnecting');
      }
    }

    function parsed(event) {
      try { return JSON.parse(event.data); } catch (e) { return {}; }    // refetch anyway
    }

    // This tab's own EventSource; tell(type, data) hears its events.
    function own(tell) {
      var greeted = false;
      source = new EventSource(EVENTS_URL);
      source.addEventListener('hello', function (event) {
        greeted = true;
        tell('hello', parsed(event));
      });
      source.addEventListener('change', function (event) { tell('change', parsed(event)); });
      // refused (closed), or failing before its hello: poll; once live, let it reconnect
      source.onerror = function () {
        if (source.readyState === EventSource.CLOSED) tell('failed', 'the event stream was refused');
        else if (!greeted) tell('failed', 'the event stream failed');
        else tell('lost');
      };
    }

    // One stream for all of this browser's console tabs: a browser opens at most 6
    // connections to a host, so a stream per tab would leave a 7th tab none to load with.
    // The tab holding the lock keeps the EventSource and relays its events over a
    // BroadcastChannel (and the latest to a tab that asks); when it goes, another takes over.
    function shared() {
      var channel = new BroadcastChannel(SHARED), leading = false, latest = null;
      channel.onmessage = function (event) {
        var m = event.data || {};
        if (m.type === 'ask') { if (leading && latest) channel.postMessage(latest); }
        else if (!leading) heard(m.type, m.data);
      };
      navigator.locks.request(SHARED, function () {
        leading = true;
        own(function (type, data) {
          latest = { type: type === 'change' ? 'hello' : type, data: data };
          channel.postMessage({ type: type, data: data });
          heard(type, data);
        });
        return new Promise(function () {});     // held while this page lives
      });
      channel.postMessage({ type: 'ask' });
    }

    function push() {
      if (!window.EventSource) { fallBack('no EventSource in this browser'); return; }
      helloTimer = setTimeout(function () { fallBack('no hello within 5 s'); }, HELLO_WAIT_MS);
      // both need a secure context (127.0.0.1 and localhost are one): else a stream per tab
      if (window.BroadcastChannel && navigator.locks) shared();
      else own(heard);
    }

    refresh();
    push();
    return { refresh: refresh, mode: function () { return mode; } };
  }

  function start(init) {
    document.addEventListener('click', function (event) {
      if (onCopy(event)) return;
      closeMenus(event.target.closest('details.menu'));
    });
    document.addEventListener('keydown', onMenuKey);
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
    else init();
  }

  window.Console = {
    $: $, el: el, append: append, td: td, code: code, clip: clip, seconds: seconds,
    clockTime: clockTime, dateTime: dateTime, duration: duration, when: when,
    updateRelative: updateRelative, yuan: yuan, shortId: shortId, idButton: idButton,
    orderRef: orderRef, orderUrl: orderUrl, menu: menu, menuGroup: menuGroup,
    closeMenus: closeMenus, say: say, send: send, act: act, errorText: errorText,
    setConnection: setConnection, live: live, start: start
  };
}());
