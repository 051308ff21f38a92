// The console's rows (both pages): orders, refunds, notification attempts, requests with their
// signature explanations and bodies, each with the text the filter matches; and the actions
// their buttons and menus take through /sim/. Plain script; needs common.js.
(function (C) {
  'use strict';

  var el = C.el, td = C.td, code = C.code;
  var ORDER_ACTIONS = { pay: 'SUCCESS', cancel: 'CANCEL', fail: 'FAIL' };
  var RESEND_MODES = ['normal', 'duplicate', 'bad_sign', 'wrong_amount'];
  var REFUND_RESEND_MODES = ['normal', 'duplicate', 'bad_key', 'wrong_amount'];
  var OUTCOMES = ['SUCCESS', 'REFUNDCLOSE', 'CHANGE'];

  // what the filter box matches: lower case, the fields joined
  function searchText(values) {
    return values.filter(function (v) { return v != null && v !== ''; }).join(' ').toLowerCase();
  }

  function button(attr, value, label, title) {
    var attrs = { type: 'button', text: label, title: title || null };
    attrs[attr] = value;
    return el('button', attrs);
  }

  function label(mode) { return mode.replace(/_/g, ' '); }

  function version(o) { return o.version || o.api || 'v2'; }

  function kindBadges(o) {
    return [el('span', { className: 'badge version-' + version(o), text: version(o) }), ' ',
      el('span', { className: 'badge trade-type', text: o.trade_type || 'JSAPI' })];
  }

  // --- orders ------------------------------------------------------------------------------
  function phoneText(phone) {
    if (!phone) return '';
    var words = { SUCCESS: 'paid', CANCEL: 'cancelled', FAIL: 'failed', USERPAYING: 'paying' };
    return el('span', { className: 'phone-result phone-' + phone.result.toLowerCase(),
      title: phone.errMsg }, (words[phone.result] || phone.result) + ' ' +
      C.clockTime(phone.time));
  }

  function paid(o) { return o.trade_state === 'SUCCESS' || o.trade_state === 'REFUND'; }

  function phoneButtons(o) {
    if (!o.payable) return null;
    return el('span', { className: 'group phone-buttons' },
      button('data-action', 'pay', 'Pay', 'the payer pays: SUCCESS, notification starts'),
      button('data-action', 'cancel', 'Cancel', 'the payer closes the payment sheet'),
      button('data-action', 'fail', 'Fail', 'the bank refuses: PAYERROR'));
  }

  // resend (or forge) the payment notification; the order's faults
  function orderMenu(o) {
    // v3 orders have more modes (signtest, stale_timestamp, wrong_serial): the data says
    var modes = paid(o) ? (o.resend_modes || RESEND_MODES) :
      (o.forged_modes || ['bad_sign', 'wrong_amount']);
    return C.menu('More ▾', 'order', [
      C.menuGroup(paid(o) ? 'Resend payment notification' : 'Forge a notification (unpaid)',
        modes.map(function (mode) { return button('data-resend', mode, label(mode)); })),
      C.menuGroup('Next refund ends (now ' + (o.refund_outcome || 'SUCCESS') + ')',
        OUTCOMES.map(function (s) { return button('data-refund-outcome', s, s); })),
      C.menuGroup('Payment notifications',
        [o.notify_lost ? button('data-deliver', 'true', 'deliver them again') :
          button('data-deliver', 'false', 'lose them (never delivered)')])
    ]);
  }

  function expiry(o) {
    if (!o.prepay_id) return '';
    if (o.prepay_expired) return el('span', { className: 'expired' }, 'expired ',
      C.when(o.prepay_expires_at));
    return C.when(o.prepay_expires_at);
  }

  function orderSearch(o) {
    return searchText([o.out_trade_no, o.openid, o.trade_state, o.transaction_id, o.prepay_id,
      version(o), o.trade_type, o.sign_type, o.mch_id]);
  }

  function buildOrder(o) {
    // why the phone cannot pay it (an expired prepay_id says so in its own cell already)
    var why = o.unpayable && o.trade_state === 'NOTPAY' && o.unpayable.code !== 'PREPAY_EXPIRED';
    var unpayable = why ? el('div', { className: 'note', title: o.unpayable.message,
      text: C.clip(o.unpayable.message, 70) }) : null;
    return el('tr', { 'data-order': o.out_trade_no, 'data-mch': o.mch_id,
      'data-state': o.trade_state, 'data-version': version(o), 'data-search': orderSearch(o) },
      td([C.orderRef(o.out_trade_no, o.mch_id), el('div', { className: 'sub' }, 'mch ' + o.mch_id,
        o.transaction_id ? [' · ', C.idButton(o.transaction_id)] : null)], 'order'),
      td([kindBadges(o), el('div', { className: 'sub', text: o.sign_type })], 'kind'),
      el('td', { className: 'state state-' + o.trade_state.toLowerCase(), text: o.trade_state }),
      td(C.yuan(o.total_fee), 'amount'),
      td(C.idButton(o.openid), 'openid'),
      td(C.when(o.created_at), 'created'),
      td([expiry(o), unpayable], 'prepay-expiry'),
      td(phoneText(o.phone), 'phone'),
      td(o.notify_lost ? el('span', { className: 'forged', text: 'lost (fault)' }) :
        o.notify_delivered ? 'delivered' : (paid(o) ? 'not yet' : ''), 'notified'),
      td([phoneButtons(o), orderMenu(o)], 'actions'));
  }

  // --- refunds -----------------------------------------------------------------------------
  function refundMenu(r) {
    if (r.refund_status === 'PROCESSING') {
      return C.menu('Settle ▾', 'refund', [C.menuGroup('End it now as',
        OUTCOMES.map(function (s) { return button('data-outcome', s, s); }))]);
    }
    if (!r.notify_url) return el('span', { className: 'note', text: 'no notify_url' });
    return C.menu('Resend ▾', 'refund', [C.menuGroup('Resend refund notification',
      (r.resend_modes || REFUND_RESEND_MODES).map(function (mode) {
        return button('data-refund-resend', mode, label(mode));
      }))]);
  }

  function buildRefund(r) {
    var settles = r.refund_status === 'PROCESSING' ?
      [C.when(r.due_at), r.outcome !== 'SUCCESS' ? ' → ' + r.outcome : ''] : C.when(r.settled_at);
    // no data-order here: tr[data-order] names an order's row (and its notifications')
    return el('tr', { 'data-refund': r.out_refund_no, 'data-mch': r.mch_id,
      'data-out-trade-no': r.out_trade_no, 'data-search': searchText([r.out_refund_no,
        r.out_trade_no, r.refund_status, r.refund_id, r.notify_url]) },
      td([C.idButton(r.out_refund_no), r.refund_id ? el('div', { className: 'sub' },
        C.idButton(r.refund_id)) : null]),
      td(C.orderRef(r.out_trade_no, r.mch_id)),
      el('td', { className: 'state state-' + r.refund_status.toLowerCase(),
        text: r.refund_status }),
      td([C.yuan(r.refund_fee), el('div', { className: 'sub', text: 'of ' +
        C.yuan(r.total_fee) })], 'amount'),
      td(C.when(r.created_at)),
      td(settles),
      td(r.notify_delivered ? 'delivered' : (r.refund_status === 'PROCESSING' ? '' :
        (r.notify_url ? 'not yet' : 'none'))),
      td(refundMenu(r), 'actions'));
  }

  // --- notification attempts ---------------------------------------------------------------
  function nextRetry(n) {
    if (n.next_retry_at) return C.when(n.next_retry_at, 'due');
    if (n.next_attempt_in != null) return el('span', { className: 'note', text: 'none pending' });
    if (n.outcome !== 'success' && n.outcome !== 'pending' && n.mode === 'auto') {
      return el('span', { className: 'note', text: 'none (schedule ended)' });
    }
    return '';
  }

  function buildNotification(n) {
    var response = n.response || n.error || '';
    return el('tr', { 'data-notification': n.seq, 'data-order': n.out_trade_no,
      'data-kind': n.kind, 'data-mode': n.mode, 'data-attempt-outcome': n.outcome,
      'data-out-refund-no': n.kind === 'refund' ? n.out_refund_no : null,
      'data-search': searchText([n.out_trade_no, n.out_refund_no, n.kind, n.mode, n.outcome,
        n.url, n.status, response]) },
      td(C.clockTime(n.time), 'time'),
      td(n.kind === 'refund' ? ['refund ', C.idButton(n.out_refund_no)] : 'payment', 'kind'),
      td(C.orderRef(n.out_trade_no, n.mch_id), 'order'),
      td(String(n.attempt), 'attempt'),
      td([n.mode, n.forged ? el('span', { className: 'forged', text: ' forged' }) : null], 'mode'),
      el('td', { className: 'url', title: n.url }, code(C.clip(n.url, 40))),
      td(n.status == null ? '' : String(n.status), 'status'),
      el('td', { className: 'response', title: response }, code(C.clip(response, 60))),
      el('td', { className: 'outcome outcome-' + n.outcome, text: n.outcome }),
      td(nextRetry(n), 'next-retry'));
  }

  // --- requests ----------------------------------------------------------------------------
  function line(name, className, text) {
    return el('div', { className: 'x-line' }, el('span', { className: 'label', text: name }),
      el('code', { className: className, text: text }));
  }

  function explanation(x) {
    var box = el('div', { className: 'explanation' });
    // API v3 (SHA256withRSA): which check failed; the string holds no key to mask
    var rsa = x.sign_type === 'SHA256withRSA';
    if (x.failed_check) C.append(box, line('failed check', 'failed-check', x.failed_check));
    if (x.string_to_sign != null) {
      C.append(box, line(rsa ? 'string to sign (SHA256withRSA, merchant private key)' :
        'signed string (' + (x.sign_type || '') + ', key masked)', 'string-to-sign',
      x.string_to_sign));
    }
    if (rsa && x.received_sign != null) {
      C.append(box, line('received signature', 'received-sign', x.received_sign || '(none)'));
    }
    if (x.expected_sign != null) {
      C.append(box, line('expected sign', 'expected-sign', x.expected_sign));
      C.append(box, line('received sign', 'received-sign', x.received_sign || '(none)'));
    }
    if (x.hints && x.hints.length) {
      C.append(box, el('ul', { className: 'hints' }, x.hints.map(function (h) {
        return el('li', { text: h });
      })));
    }
    return box;
  }

  // a body laid out to be read: XML a field a line, JSON indented; other text as it is
  function readable(text) {
    if (typeof text !== 'string') return JSON.stringify(text, null, 2);
    var trimmed = text.trim();
    if (trimmed.charAt(0) === '<') return trimmed.replace(/(<\/[A-Za-z0-9_]+>)(?=<)/g, '$1\n');
    if (trimmed.charAt(0) === '{') {
      try { return JSON.stringify(JSON.parse(trimmed), null, 2); } catch (e) { /* as is */ }
    }
    return text;
  }

  function body(name, text) {
    if (text == null || text === '') return null;
    return el('div', { className: 'body' }, el('div', { className: 'label', text: name }),
      el('pre', { className: 'body-text', text: readable(text) }));
  }

  // the request and answer bodies (keys masked by the simulator), folded
  function bodies(r, open) {
    var parts = [body('request', r.request_body), body('answer', r.answer_body)];
    if (!parts[0] && !parts[1]) return null;
    return el('details', { className: 'bodies', open: open ? '' : null },
      el('summary', { text: 'bodies' }), parts);
  }

  function requestDetails(r, open) {
    var details = [];
    if (r.negative_test) details.push(el('div', { text: 'Wechatpay-Negative-Test: ' +
      r.negative_test }));
    if (r.client_cert) details.push(el('div', { className: 'sub',
      text: 'client certificate: ' + r.client_cert }));
    if (r.explanation) details.push(explanation(r.explanation));
    details.push(bodies(r, open));
    return details;
  }

  function buildRequest(r, open) {
    var bad = r.signature === 'bad' || (r.error != null && r.error !== '');
    var verdict = r.verdict || 'in flight';
    return el('tr', { 'data-request': r.seq != null ? r.seq : r.id, 'data-api': r.api,
      'data-signature': r.signature || '', className: bad ? 'bad' : null,
      'data-search': searchText([r.path, r.api, r.method, verdict, r.status, r.out_trade_no]) },
      td(C.clockTime(r.time || r.at), 'time'),
      td([r.api || '', r.out_trade_no ? el('div', { className: 'sub' },
        C.orderRef(r.out_trade_no, r.mch_id || r.mchid)) : null], 'api'),
      td([r.method + ' ', code(r.path), r.status ? el('div', { className: 'sub',
        text: 'HTTP ' + r.status }) : null], 'path'),
      el('td', { className: 'verdict' + (bad ? ' verdict-bad' : ''), text: verdict }),
      td(requestDetails(r, open), 'details'));
  }

  // --- actions -------------------------------------------------------------------------------
  function mchQuery(node) {
    return '?mch_id=' + encodeURIComponent(node.getAttribute('data-mch'));
  }

  function summarize(attempts) {
    var counts = {};
    attempts.forEach(function (a) { counts[a.outcome] = (counts[a.outcome] || 0) + 1; });
    return Object.keys(counts).map(function (k) { return counts[k] + ' ' + k; }).join(', ');
  }

  function phoneSaid(no, result, d) {
    if (result === 'SUCCESS') return 'Order ' + no + ' paid (' + d.transaction_id +
      '); notification delivery started.';
    if (result === 'CANCEL') return 'Order ' + no + ': the payer cancelled (' + d.errMsg +
      '); nothing changed at WeChat, it is still ' + d.trade_state + '.';
    return 'Order ' + no + ': payment failed, now ' + d.trade_state + '.';
  }

  function orderAction(b, holder, after) {
    var no = holder.getAttribute('data-order');
    var base = '/sim/orders/' + encodeURIComponent(no);
    var q = mchQuery(holder);
    if (b.hasAttribute('data-action')) {
      var result = ORDER_ACTIONS[b.getAttribute('data-action')];
      return C.act(b, 'POST', base + '/phone' + q, { result: result },
        function (d) { return phoneSaid(no, result, d); }, after);
    }
    if (b.hasAttribute('data-resend')) {
      var mode = b.getAttribute('data-resend');
      return C.act(b, 'POST', base + '/notify' + q, { mode: mode }, function (d) {
        return 'Order ' + no + ': sent ' + mode + ' (' + d.attempts.length + ' attempt' +
          (d.attempts.length === 1 ? '' : 's') + ': ' + summarize(d.attempts) + ').';
      }, after);
    }
    if (b.hasAttribute('data-refund-outcome')) {
      var status = b.getAttribute('data-refund-outcome');
      return C.act(b, 'POST', base + '/refund-outcome' + q, { status: status }, function () {
        return 'Order ' + no + ': its next refund ends ' + status + '.';
      }, after);
    }
    var deliver = b.getAttribute('data-deliver') === 'true';
    return C.act(b, 'POST', base + '/notifications' + q, { deliver: deliver }, function () {
      return 'Order ' + no + ': payment notifications ' + (deliver ? 'delivered again.' :
        'lost from now on (never reach the notify_url).');
    }, after);
  }

  function refundAction(b, holder, after) {
    var no = holder.getAttribute('data-refund');
    var base = '/sim/refunds/' + encodeURIComponent(no);
    if (b.hasAttribute('data-outcome')) {
      var status = b.getAttribute('data-outcome');
      return C.act(b, 'POST', base + mchQuery(holder), { status: status }, function (d) {
        return 'Refund ' + no + ' settled ' + d.refund_status + '.';
      }, after);
    }
    var mode = b.getAttribute('data-refund-resend');
    return C.act(b, 'POST', base + '/notify' + mchQuery(holder), { mode: mode }, function (d) {
      return 'Refund ' + no + ': sent ' + mode + ' (' + summarize(d.attempts) + ').';
    }, after);
  }

  var ORDER_BUTTONS = '[data-action],[data-resend],[data-refund-outcome],[data-deliver]';
  var REFUND_BUTTONS = '[data-outcome],[data-refund-resend]';

  // A click on an order's or a refund's button: true when it was one (after: refetch).
  function onAction(event, after) {
    var b = event.target.closest('button');
    if (!b || b.disabled) return false;
    var holder;
    if (b.matches(ORDER_BUTTONS) && (holder = b.closest('[data-order][data-mch]'))) {
      orderAction(b, holder, after);
    } else if (b.matches(REFUND_BUTTONS) && (holder = b.closest('[data-refund][data-mch]'))) {
      refundAction(b, holder, after);
    } else {
      return false;
    }
    C.closeMenus();
    return true;
  }

  C.rows = {
    buildOrder: buildOrder, buildRefund: buildRefund, buildNotification: buildNotification,
    buildRequest: buildRequest, explanation: explanation, kindBadges: kindBadges,
    phoneButtons: phoneButtons, orderMenu: orderMenu, refundMenu: refundMenu, paid: paid,
    version: version, onAction: onAction, bodies: bodies, readable: readable
  };
}(window.Console));
