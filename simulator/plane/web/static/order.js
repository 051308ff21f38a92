// The console's page of one order (/sim/console/orders/<out_trade_no>): its state, every
// request that named it with both bodies, every notification attempt with the body sent and
// the answer, its refunds and their notifications, its bill lines, and its actions; from
// <page>/data, refetched when the simulator pushes a change. Needs common.js and rows.js.
(function (C) {
  'use strict';

  var $ = C.$, el = C.el, td = C.td, code = C.code, R = C.rows;
  var updates = null;

  // the page names its order and merchant (two merchants may use one number)
  function dataUrl() {
    var body = document.body;
    return C.orderUrl(body.getAttribute('data-out-trade-no')) + '/data?mch_id=' +
      encodeURIComponent(body.getAttribute('data-mch-id'));
  }

  function field(name, value) {
    if (value == null || value === '') return null;
    return [el('dt', { text: name }), el('dd', { 'data-field': name }, value)];
  }

  function timeField(ts) { return ts ? C.dateTime(ts) : null; }

  function renderSummary(o) {
    $('#order-state').textContent = o.trade_state;
    $('#order-state').className = 'state state-' + o.trade_state.toLowerCase();
    var badges = $('#order-badges');
    badges.textContent = '';
    C.append(badges, R.kindBadges(o));
    var dl = $('#order-fields');
    dl.textContent = '';
    C.append(dl, [
      field('amount', C.yuan(o.total_fee)),
      o.refunded_fee ? field('refunded', C.yuan(o.refunded_fee)) : null,
      field('description', o.body || o.description),
      field('openid', C.idButton(o.openid)),
      field('merchant', code(o.mch_id)),
      field('appid', code(o.appid)),
      field('sign type', o.sign_type),
      field('transaction_id', C.idButton(o.transaction_id)),
      field('prepay_id', C.idButton(o.prepay_id)),
      field('created', timeField(o.created_at)),
      field('prepay expires', timeField(o.prepay_expires_at)),
      field('paid', timeField(o.paid_at)),
      field('notify_url', code(o.notify_url)),
      field('notification', o.notify_lost ? 'lost (fault)' :
        o.notify_delivered ? 'delivered' : (R.paid(o) ? 'not yet delivered' : null)),
      o.unpayable && o.trade_state === 'NOTPAY' ? field('phone', o.unpayable.message) : null
    ]);
  }

  // the same buttons and menu as the order's row on the main page
  function renderActions(o) {
    var box = $('#order-actions');
    box.setAttribute('data-order', o.out_trade_no);
    box.setAttribute('data-mch', o.mch_id);
    var open = box.querySelector('details[open]');
    box.textContent = '';
    C.append(box, [R.phoneButtons(o), R.orderMenu(o)]);
    if (open) box.querySelector('details.menu').open = true;
  }

  function table(tbody, rows, empty, colspan) {
    tbody.textContent = '';
    if (!rows.length) rows = [el('tr', { className: 'empty' }, el('td', { colspan: colspan,
      text: empty }))];
    C.append(tbody, rows);
  }

  function pre(text) {
    if (text == null || text === '') return '';
    return el('pre', { className: 'body-text', text: R.readable(text) });
  }

  function buildAttempt(n) {
    var answer = n.answer != null ? n.answer : (n.response || n.error || '');
    return el('tr', { 'data-attempt': n.seq != null ? n.seq : n.at,
      'data-kind': n.kind || null, 'data-attempt-outcome': n.outcome },
      td(C.clockTime(n.at || n.time), 'time'),
      td(n.attempt == null ? '' : String(n.attempt), 'attempt'),
      td([n.mode || '', n.forged ? el('span', { className: 'forged', text: ' forged' }) : null]),
      el('td', { className: 'url', title: n.url }, code(C.clip(n.url, 40))),
      td(n.status == null ? '' : String(n.status), 'status'),
      el('td', { className: 'outcome outcome-' + n.outcome, text: n.outcome }),
      td([el('div', { className: 'label', text: 'body sent' }), pre(n.body_sent),
        el('div', { className: 'label', text: 'answer' }), pre(answer)], 'exchange'));
  }

  function attemptsTable(attempts, empty) {
    var tbody = el('tbody');
    table(tbody, attempts.map(buildAttempt), empty, 7);
    return el('table', { className: 'attempts' }, el('thead', null, el('tr', null,
      ['time', 'attempt', 'mode', 'URL', 'HTTP', 'outcome', 'body sent / answer'].map(
        function (h) { return el('th', { text: h }); }))), tbody);
  }

  function buildRefund(r, mch) {
    var holder = el('div', { className: 'refund', 'data-refund': r.out_refund_no,
      'data-mch': r.mch_id || mch });
    C.append(holder, el('h3', null, 'Refund ', C.idButton(r.out_refund_no), ' ',
      el('span', { className: 'state state-' + (r.refund_status || r.status || '').toLowerCase(),
        text: r.refund_status || r.status }), ' ', C.yuan(r.refund_fee)));
    C.append(holder, el('p', { className: 'sub' },
      r.created_at ? 'created ' + C.dateTime(r.created_at) : '',
      r.settled_at ? ' · settled ' + C.dateTime(r.settled_at) : '',
      r.refund_id ? [' · refund_id ', code(r.refund_id)] : '', ' ',
      r.resend_modes || r.refund_status === 'PROCESSING' ? R.refundMenu(r) : null));
    C.append(holder, attemptsTable(r.notifications || [], 'No notification of this refund.'));
    return holder;
  }

  function render(d) {
    var o = d.order;
    $('#order-no').textContent = o.out_trade_no;
    document.title = 'Order ' + o.out_trade_no + ': WeChat simulator console';
    renderSummary(o);
    renderActions(o);
    table($('#order-requests-body'), (d.requests || []).map(function (r) {
      return R.buildRequest(r, true);
    }), 'No request named this order.', 5);
    table($('#order-notifications-body'), (d.notifications || []).map(buildAttempt),
      R.paid(o) ? 'No notification attempt yet.' : 'Not paid: nothing notified yet.', 7);
    var refunds = $('#order-refunds-list');
    refunds.textContent = '';
    C.append(refunds, (d.refunds || []).length ? d.refunds.map(function (r) {
      return buildRefund(r, o.mch_id);
    }) : el('p', { className: 'note', text: 'No refund.' }));
    var lines = d.bill_lines || [];
    $('#order-bill-lines').textContent = lines.length ? lines.map(function (l) {
      return typeof l === 'string' ? l : JSON.stringify(l);
    }).join('\n') : 'No bill names it yet (a day\'s bill exists once that day has ended).';
  }

  function missing(status, data) {
    $('#order-missing').hidden = false;
    $('#order-missing').textContent = 'No such order: ' + C.errorText(status, data);
  }

  function load() {
    return fetch(dataUrl(), { cache: 'no-store', headers: { Accept: 'application/json' } })
      .then(function (resp) {
        return resp.json().then(function (data) {
          if (resp.status === 404) { missing(resp.status, data); return data.revision; }
          if (!resp.ok) throw new Error('HTTP ' + resp.status);
          $('#order-missing').hidden = true;
          render(data);
          C.updateRelative(Date.now() / 1000);
          return data.revision;
        });
      });
  }

  function init() {
    document.addEventListener('click', function (event) {
      R.onAction(event, function () { updates.refresh(); });
    });
    updates = C.live(load);
  }

  C.start(init);
}(window.Console));
