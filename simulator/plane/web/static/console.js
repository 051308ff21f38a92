// The WeChat simulator console: polls GET /sim/console/state once a second and drives the
// simulator through its /sim/ control plane. Plain JavaScript, no framework, no build step,
// nothing loaded from anywhere but the simulator. Every value is written with textContent.
(function () {
  'use strict';

  // how often the page asks for the state: ?poll=<ms> (100 to 10000), else once a second
  var POLL_MS = (function () {
    var asked = Number(new URLSearchParams(window.location.search).get('poll'));
    return asked >= 100 && asked <= 10000 ? asked : 1000;
  })();
  var STATE_URL = '/sim/console/state';
  var ORDER_ACTIONS = { pay: 'SUCCESS', cancel: 'CANCEL', fail: 'FAIL' };
  var RESEND_MODES = ['normal', 'duplicate', 'bad_sign', 'wrong_amount'];
  var REFUND_RESEND_MODES = ['normal', 'duplicate', 'bad_key', 'wrong_amount'];
  var OUTCOMES = ['SUCCESS', 'REFUNDCLOSE', 'CHANGE'];

  var last = null;          // the last snapshot
  var fetchedAt = 0;        // performance.now() when it arrived
  var timer = null;
  var inFlight = false;
  var again = false;

  // --- small DOM helpers ---------------------------------------------------------------
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

  function td(content, className) {
    return el('td', { className: className || null }, content);
  }

  function code(text) { return el('code', { text: text == null ? '' : text }); }

  function shorten(text, n) {
    text = text == null ? '' : String(text);
    return text.length > n ? text.slice(0, n - 1) + '…' : text;
  }

  // --- time ----------------------------------------------------------------------------
  // The simulator's clock is real time plus its offset: "now" is the snapshot's now plus the
  // time since it arrived.
  function simNow() {
    if (!last) return Date.now() / 1000;
    return last.clock.now + (performance.now() - fetchedAt) / 1000;
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  function clockTime(ts) {
    if (!ts) return '';
    var d = new Date(ts * 1000);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function dateTime(ts) {
    var d = new Date(ts * 1000);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      clockTime(ts);
  }

  function duration(seconds) {
    var s = Math.abs(seconds);
    if (s < 1) return (Math.round(s * 1000)) + ' ms';
    if (s < 90) return (Math.round(s * 10) / 10) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    if (s < 172800) return (Math.round(s / 360) / 10) + ' h';
    return (Math.round(s / 8640) / 10) + ' days';
  }

  // "12:00:03 (in 14 s)": the relative part is a span refreshed every tick, so rows whose
  // data did not change are not rebuilt.
  function when(ts, pastWord) {
    if (!ts) return '';
    return el('span', { className: 'when' }, clockTime(ts), ' ',
      el('span', { className: 'rel', 'data-at': ts, 'data-past': pastWord || '' }));
  }

  function updateRelative() {
    var now = simNow();
    document.querySelectorAll('span.rel').forEach(function (span) {
      var at = parseFloat(span.getAttribute('data-at'));
      var left = at - now;
      var past = span.getAttribute('data-past');
      span.textContent = left > 0 ? '(in ' + duration(left) + ')' :
        '(' + (past ? past + ' ' : '') + duration(left) + ' ago)';
      span.classList.toggle('past', left <= 0);
    });
    if (last) $('#clock-now').textContent = dateTime(now);
  }

  // --- keyed rows: a row is rebuilt only when its data changed -------------------------
  function syncRows(tbody, items, keyOf, build, emptyText, colspan) {
    var existing = new Map();
    Array.prototype.forEach.call(tbody.children, function (tr) {
      if (tr.dataset.key != null) existing.set(tr.dataset.key, tr);
      else tr.remove();
    });
    var prev = null;
    items.forEach(function (item) {
      var key = keyOf(item);
      var hash = JSON.stringify(item);
      var tr = existing.get(key);
      if (!tr || tr._hash !== hash) {
        var fresh = build(item);
        fresh.dataset.key = key;
        fresh._hash = hash;
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
      }
      existing.delete(key);
      var want = prev ? prev.nextSibling : tbody.firstChild;
      if (tr !== want) tbody.insertBefore(tr, want);
      prev = tr;
    });
    existing.forEach(function (tr) { tr.remove(); });
    if (!items.length) {
      tbody.appendChild(el('tr', { className: 'empty' },
        el('td', { colspan: colspan, text: emptyText })));
    }
  }

  // --- orders --------------------------------------------------------------------------
  function orderKey(o) { return o.mch_id + '/' + o.out_trade_no; }

  function actionButton(attr, value, label, title) {
    var attrs = { type: 'button', text: label, title: title || null };
    attrs[attr] = value;
    return el('button', attrs);
  }

  function phoneText(phone) {
    if (!phone) return '';
    var words = { SUCCESS: 'paid', CANCEL: 'cancelled', FAIL: 'failed', USERPAYING: 'paying' };
    return el('span', { className: 'phone-result phone-' + phone.result.toLowerCase(),
      title: phone.errMsg }, (words[phone.result] || phone.result) + ' at ' +
      clockTime(phone.time));
  }

  function buildOrder(o) {
    var actions = el('td', { className: 'actions' });
    if (o.payable) {
      append(actions, el('span', { className: 'group phone-buttons' },
        actionButton('data-action', 'pay', 'Pay', 'the payer pays: SUCCESS, notification starts'),
        actionButton('data-action', 'cancel', 'Cancel', 'the payer closes the payment sheet'),
        actionButton('data-action', 'fail', 'Fail', 'the bank refuses: PAYERROR')));
    }
    var paid = o.trade_state === 'SUCCESS' || o.trade_state === 'REFUND';
    // v3 orders have more modes (signtest, stale_timestamp, wrong_serial): the snapshot says
    var modes = paid ? (o.resend_modes || RESEND_MODES) :
      (o.forged_modes || ['bad_sign', 'wrong_amount']);
    append(actions, el('span', { className: 'group resend-buttons' }, 'resend: ',
      modes.map(function (mode) {
        return actionButton('data-resend', mode, mode.replace(/_/g, ' '),
          paid ? null : 'a forgery about an unpaid order');
      })));
    var expiry;
    if (!o.prepay_id) expiry = '';
    else if (o.prepay_expired) expiry = el('span', { className: 'expired' }, 'expired ',
      when(o.prepay_expires_at));
    else expiry = when(o.prepay_expires_at);
    var state = el('td', { className: 'state state-' + o.trade_state.toLowerCase(),
      text: o.trade_state });
    var unpayable = o.unpayable && o.trade_state === 'NOTPAY' ?
      el('div', { className: 'note', text: o.unpayable.message }) : null;
    return el('tr', { 'data-order': o.out_trade_no, 'data-mch': o.mch_id,
      'data-state': o.trade_state },
      td([code(o.out_trade_no), el('div', { className: 'sub', text: 'mch ' + o.mch_id +
        (o.transaction_id ? ' · ' + o.transaction_id : '') })]),
      state,
      td(String(o.total_fee), 'amount'),
      td(code(o.openid || ''), 'openid'),
      td(o.sign_type, 'sign-type'),
      td(code(o.prepay_id), 'prepay-id'),
      td([expiry, unpayable], 'prepay-expiry'),
      td(phoneText(o.phone), 'phone'),
      td(o.notify_delivered ? 'delivered' : (paid ? 'not yet' : ''), 'notified'),
      actions);
  }

  function buildRefund(r) {
    var actions = el('td', { className: 'actions' });
    if (r.refund_status === 'PROCESSING') {
      append(actions, el('span', { className: 'group outcome-buttons' }, 'settle: ',
        OUTCOMES.map(function (s) { return actionButton('data-outcome', s, s); })));
    } else if (r.notify_url) {
      append(actions, el('span', { className: 'group resend-buttons' }, 'resend: ',
        (r.resend_modes || REFUND_RESEND_MODES).map(function (mode) {
          return actionButton('data-refund-resend', mode, mode.replace(/_/g, ' '));
        })));
    }
    var settles = r.refund_status === 'PROCESSING' ?
      [when(r.due_at), r.outcome !== 'SUCCESS' ? ' → ' + r.outcome : ''] :
      when(r.settled_at);
    // no data-order here: tr[data-order] names an order's row (and its notifications')
    return el('tr', { 'data-refund': r.out_refund_no, 'data-mch': r.mch_id,
      'data-out-trade-no': r.out_trade_no },
      td(code(r.out_refund_no)),
      td(code(r.out_trade_no)),
      el('td', { className: 'state state-' + r.refund_status.toLowerCase(),
        text: r.refund_status }),
      td(r.refund_fee + ' / ' + r.total_fee, 'amount'),
      td(code(r.refund_id)),
      td(when(r.created_at)),
      td(settles),
      td(r.notify_url ? code(r.notify_url) : el('span', { className: 'note',
        text: 'none (no notification)' })),
      td(r.notify_delivered ? 'delivered' : (r.refund_status === 'PROCESSING' ? '' : 'not yet')),
      actions);
  }

  // --- notifications -------------------------------------------------------------------
  function buildNotification(n) {
    var next = '';
    if (n.next_retry_at) next = when(n.next_retry_at, 'due');
    else if (n.next_attempt_in != null) next = el('span', { className: 'note',
      text: 'none pending (delivered, resent or reset)' });
    else if (n.outcome !== 'success' && n.outcome !== 'pending' && n.mode === 'auto') {
      next = el('span', { className: 'note', text: 'none (schedule ended)' });
    }
    var response = n.response || n.error || '';
    return el('tr', { 'data-notification': n.seq, 'data-order': n.out_trade_no,
      'data-kind': n.kind, 'data-mode': n.mode, 'data-attempt-outcome': n.outcome,
      'data-out-refund-no': n.kind === 'refund' ? n.out_refund_no : null },
      td(clockTime(n.time), 'time'),
      td(n.kind === 'refund' ? ['refund ', code(n.out_refund_no)] : 'payment', 'kind'),
      td(code(n.out_trade_no), 'order'),
      td(String(n.attempt), 'attempt'),
      td([n.mode, n.forged ? el('span', { className: 'forged', text: ' forged' }) : null],
        'mode'),
      td(code(n.url), 'url'),
      td(n.status == null ? '' : String(n.status), 'status'),
      el('td', { className: 'response', title: response }, code(shorten(response, 80))),
      el('td', { className: 'outcome outcome-' + n.outcome, text: n.outcome }),
      td(next, 'next-retry'));
  }

  // --- requests ------------------------------------------------------------------------
  function explanation(x) {
    var box = el('div', { className: 'explanation' });
    // API v3 (SHA256withRSA): which check failed; the string holds no key to mask
    var rsa = x.sign_type === 'SHA256withRSA';
    if (x.failed_check) {
      append(box, el('div', { className: 'x-line' }, el('span', { className: 'label',
        text: 'failed check' }), el('code', { className: 'failed-check', text: x.failed_check })));
    }
    if (x.string_to_sign != null) {
      append(box, el('div', { className: 'x-line' }, el('span', { className: 'label',
        text: rsa ? 'string to sign (SHA256withRSA, merchant private key)' :
          'signed string (' + (x.sign_type || '') + ', key masked)' }),
        el('code', { className: 'string-to-sign', text: x.string_to_sign })));
    }
    if (rsa && x.received_sign != null) {
      append(box, el('div', { className: 'x-line' }, el('span', { className: 'label',
        text: 'received signature' }), el('code', { className: 'received-sign',
        text: x.received_sign || '(none)' })));
    }
    if (x.expected_sign != null) {
      append(box, el('div', { className: 'x-line' }, el('span', { className: 'label',
        text: 'expected sign' }), el('code', { className: 'expected-sign',
        text: x.expected_sign })));
      append(box, el('div', { className: 'x-line' }, el('span', { className: 'label',
        text: 'received sign' }), el('code', { className: 'received-sign',
        text: x.received_sign || '(none)' })));
    }
    if (x.hints && x.hints.length) {
      append(box, el('ul', { className: 'hints' }, x.hints.map(function (h) {
        return el('li', { text: h });
      })));
    }
    return box;
  }

  function requestVerdict(r) {
    if (r.verdict) return r.verdict;
    return 'in flight';
  }

  function buildRequest(r) {
    var bad = r.signature === 'bad' || (r.error != null && r.error !== '');
    var details = el('td', { className: 'details' });
    if (r.negative_test) append(details, el('div', { text: 'Wechatpay-Negative-Test: ' +
      r.negative_test }));
    if (r.client_cert) append(details, el('div', { className: 'sub',
      text: 'client certificate: ' + r.client_cert }));
    if (r.explanation) append(details, explanation(r.explanation));
    return el('tr', { 'data-request': r.seq, 'data-api': r.api,
      'data-signature': r.signature || '', className: bad ? 'bad' : null },
      td(clockTime(r.time), 'time'),
      td(r.api || '', 'api'),
      td([r.method + ' ', code(r.path)], 'path'),
      el('td', { className: 'verdict' + (bad ? ' verdict-bad' : ''), text: requestVerdict(r) }),
      details);
  }

  // --- faults and config ---------------------------------------------------------------
  function buildFault(f) {
    return el('tr', { 'data-fault': f.id, 'data-path': f.path, 'data-kind': f.kind },
      td(code(f.id)), td(code(f.path)), td(f.kind),
      td(f.value == null ? '' : String(f.value)), td(String(f.probability)),
      td(f.count == null ? 'until deleted' : String(f.count)), td(String(f.fired)),
      td(el('button', { type: 'button', className: 'delete', text: 'Delete' })));
  }

  function buildApp(a) {
    return el('tr', { 'data-app': a.appid }, td(code(a.appid)),
      td(code(a.secret_masked), 'masked'));
  }

  function buildMerchant(m) {
    return el('tr', { 'data-merchant': m.mch_id }, td(code(m.mch_id)),
      td(code(m.api_key_masked), 'masked'), td(code(m.sandbox_key_masked), 'masked'),
      td(m.appids.join(', ')));
  }

  // --- render --------------------------------------------------------------------------
  function render(s) {
    syncRows($('#orders-body'), s.orders, orderKey, buildOrder,
      'No order yet: a unifiedorder call creates one.', 10);
    syncRows($('#refunds-body'), s.refunds, function (r) { return r.mch_id + '/' + r.out_refund_no; },
      buildRefund, 'No refund yet.', 10);
    syncRows($('#notifications-body'), s.notifications, function (n) { return String(n.seq); },
      buildNotification, 'No notification sent yet: a paid order is notified.', 10);
    syncRows($('#requests-body'), s.requests, function (r) { return String(r.seq); },
      buildRequest, 'No WeChat call yet.', 5);
    syncRows($('#faults-body'), s.faults, function (f) { return f.id; }, buildFault,
      'No fault configured: every call is answered normally.', 8);
    syncRows($('#apps-body'), s.config.apps, function (a) { return a.appid; }, buildApp, '', 2);
    syncRows($('#merchants-body'), s.config.merchants, function (m) { return m.mch_id; },
      buildMerchant, '', 4);
    $('#clock-offset').textContent = s.clock.offset ?
      (s.clock.offset > 0 ? '+' : '-') + duration(s.clock.offset) + ' (' + s.clock.offset + ' s)' :
      '0 (real time)';
    $('#clock-scale').textContent = String(s.clock.time_scale);
    $('#ttl-code').textContent = duration(s.ttl.code);
    $('#ttl-prepay').textContent = duration(s.ttl.prepay);
    $('#advance-code').setAttribute('data-seconds', String(s.ttl.code + 1));
    $('#advance-code').title = 'advance ' + (s.ttl.code + 1) + ' s';
    $('#advance-prepay').setAttribute('data-seconds', String(s.ttl.prepay + 1));
    $('#advance-prepay').title = 'advance ' + (s.ttl.prepay + 1) + ' s';
    $('#refund-delay').textContent = duration(s.refund_delay_scaled);
    $('#seed').textContent = s.seed == null ? '' : 'Fault draws seeded with ' + s.seed + '.';
    $('#stats').textContent = s.stats.wechat_requests + ' WeChat calls on ' +
      s.stats.connections_accepted + ' connections';
    $('#updated').textContent = 'updated ' + clockTime(Date.now() / 1000);
  }

  function setConnection(ok, text) {
    var c = $('#connection');
    c.setAttribute('data-state', ok ? 'live' : 'down');
    c.textContent = ok ? 'live' : text;
  }

  // --- polling -------------------------------------------------------------------------
  function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    clearTimeout(timer);
    fetch(STATE_URL, { cache: 'no-store', headers: { Accept: 'application/json' } })
      .then(function (resp) {
        if (!resp.ok) throw new Error('HTTP ' + resp.status);
        return resp.json();
      })
      .then(function (s) {
        last = s;
        fetchedAt = performance.now();
        render(s);
        updateRelative();
        setConnection(true);
      })
      .catch(function (err) {
        setConnection(false, 'simulator unreachable (' + err.message + '); retrying');
      })
      .then(function () {
        inFlight = false;
        if (again) { again = false; refresh(); return; }
        timer = setTimeout(refresh, POLL_MS);
      });
  }

  // --- actions -------------------------------------------------------------------------
  var toastTimer = null;

  // #message keeps the last action's result; #toast shows it for a few seconds.
  function say(text, ok) {
    ['#message', '#toast'].forEach(function (selector) {
      var m = $(selector);
      m.textContent = text;
      m.setAttribute('data-ok', ok ? 'true' : 'false');
    });
    var toast = $('#toast');
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.hidden = true; }, 5000);
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

  function act(button, method, url, body, describe) {
    button.disabled = true;
    say('…', true);
    return send(method, url, body).then(function (res) {
      var ok = res.status >= 200 && res.status < 300;
      say(ok ? describe(res.data) : 'Failed: ' + errorText(res.status, res.data), ok);
    }, function (err) {
      say('Failed: ' + err.message, false);
    }).then(function () {
      button.disabled = false;
      refresh();
    });
  }

  function mchQuery(tr) {
    return '?mch_id=' + encodeURIComponent(tr.getAttribute('data-mch'));
  }

  function summarize(attempts) {
    var counts = {};
    attempts.forEach(function (a) { counts[a.outcome] = (counts[a.outcome] || 0) + 1; });
    return Object.keys(counts).map(function (k) { return counts[k] + ' ' + k; }).join(', ');
  }

  function onClick(event) {
    var button = event.target.closest('button');
    if (!button || button.disabled) return;
    var tr = button.closest('tr');
    var no;
    if (button.hasAttribute('data-action') && tr && tr.hasAttribute('data-order')) {
      no = tr.getAttribute('data-order');
      var result = ORDER_ACTIONS[button.getAttribute('data-action')];
      act(button, 'POST', '/sim/orders/' + encodeURIComponent(no) + '/phone' + mchQuery(tr),
        { result: result }, function (d) {
          if (result === 'SUCCESS') return 'Order ' + no + ' paid (' + d.transaction_id +
            '); notification delivery started.';
          if (result === 'CANCEL') return 'Order ' + no + ': the payer cancelled (' + d.errMsg +
            '); nothing changed at WeChat, it is still ' + d.trade_state + '.';
          return 'Order ' + no + ': payment failed, now ' + d.trade_state + '.';
        });
    } else if (button.hasAttribute('data-resend') && tr && tr.hasAttribute('data-order')) {
      no = tr.getAttribute('data-order');
      var mode = button.getAttribute('data-resend');
      act(button, 'POST', '/sim/orders/' + encodeURIComponent(no) + '/notify' + mchQuery(tr),
        { mode: mode }, function (d) {
          return 'Order ' + no + ': sent ' + mode + ' (' + d.attempts.length + ' attempt' +
            (d.attempts.length === 1 ? '' : 's') + ': ' + summarize(d.attempts) + ').';
        });
    } else if (button.hasAttribute('data-outcome') && tr && tr.hasAttribute('data-refund')) {
      no = tr.getAttribute('data-refund');
      var status = button.getAttribute('data-outcome');
      act(button, 'POST', '/sim/refunds/' + encodeURIComponent(no) + mchQuery(tr),
        { status: status }, function (d) {
          return 'Refund ' + no + ' settled ' + d.refund_status + '.';
        });
    } else if (button.hasAttribute('data-refund-resend') && tr && tr.hasAttribute('data-refund')) {
      no = tr.getAttribute('data-refund');
      var rmode = button.getAttribute('data-refund-resend');
      act(button, 'POST', '/sim/refunds/' + encodeURIComponent(no) + '/notify' + mchQuery(tr),
        { mode: rmode }, function (d) {
          return 'Refund ' + no + ': sent ' + rmode + ' (' + summarize(d.attempts) + ').';
        });
    } else if (button.classList.contains('delete') && tr && tr.hasAttribute('data-fault')) {
      var id = tr.getAttribute('data-fault');
      act(button, 'DELETE', '/sim/faults/' + encodeURIComponent(id), undefined, function () {
        return 'Fault ' + id + ' deleted.';
      });
    } else if (button.id === 'clear-faults') {
      act(button, 'DELETE', '/sim/faults', undefined, function (d) {
        return d.deleted + ' fault' + (d.deleted === 1 ? '' : 's') + ' cleared.';
      });
    } else if (button.id === 'advance' || button.id === 'advance-code' ||
               button.id === 'advance-prepay') {
      var seconds = button.id === 'advance' ? parseFloat($('#advance-seconds').value) :
        parseFloat(button.getAttribute('data-seconds'));
      if (!(seconds >= 0)) { say('Advance by a number of seconds (0 or more).', false); return; }
      act(button, 'POST', '/sim/clock', { advance: seconds }, function (d) {
        return 'Clock advanced ' + duration(seconds) + '; offset now ' + d.offset + ' s.';
      });
    } else if (button.id === 'show-bill') {
      showBill();
    } else if (button.id === 'reset') {
      act(button, 'POST', '/sim/reset', undefined, function () {
        return 'Simulator reset: orders, refunds, codes, logs, faults and clock offset forgotten.';
      });
    }
  }

  function billUrl() {
    return '/sim/bills/' + encodeURIComponent($('#bill-date').value) +
      '?bill_type=' + encodeURIComponent($('#bill-type').value);
  }

  // GET /sim/bills/<day>: the bill's text, or the reason there is none (yet)
  function showBill() {
    var url = billUrl();
    $('#bill-link').href = url;
    fetch(url).then(function (r) {
      return r.text().then(function (text) {
        if (r.ok) { $('#bill-text').textContent = text; return; }
        var reason = text;
        try { reason = JSON.parse(text).error.message; } catch (e) { /* not JSON */ }
        $('#bill-text').textContent = 'No bill: ' + reason;
      });
    });
  }

  function numberField(form, name) {
    var text = form.elements[name].value.trim();
    if (text === '') return undefined;
    var value = Number(text);
    return isFinite(value) ? value : text;      // the simulator explains a bad value
  }

  function onFaultSubmit(event) {
    event.preventDefault();
    var form = event.target;
    var body = { path: form.elements.path.value, kind: form.elements.kind.value };
    var value = numberField(form, 'value');
    var probability = numberField(form, 'probability');
    var count = numberField(form, 'count');
    if (value !== undefined) body.value = value;
    if (probability !== undefined) body.probability = probability;
    if (count !== undefined) body.count = count;
    var button = form.querySelector('button[type=submit]');
    act(button, 'POST', '/sim/faults', body, function (d) {
      return 'Fault ' + d.id + ' added: ' + body.kind + ' on ' + body.path + '.';
    });
  }

  function start() {
    document.addEventListener('click', onClick);
    $('#fault-form').addEventListener('submit', onFaultSubmit);
    setInterval(updateRelative, 250);
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
