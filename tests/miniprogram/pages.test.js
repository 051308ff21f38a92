// The sample Mini Program's real pages, rendered with miniprogram-simulate and tapped, against
// real run_simulator.py and run_server.py processes (wx played by tests/miniprogram/support).
'use strict'
const { describe, test, before, after, beforeEach } = require('node:test')
const assert = require('node:assert/strict')
const { open, tap, text, until, shop } = require('./support/pages')
const { startShop, DEMO } = require('./support/processes')
const { createWx } = require('./support/wx-adapter')

const { MESSAGES } = shop
let userNo = 0

/** A fresh user (its own wx, storage and orders) pointed at `running`. */
function newUser(running, settings = {}) {
  const { wx, control } = createWx({ simUrl: running.sim.url, user: 'mp-user-' + (++userNo) })
  shop.configure(Object.assign({ baseUrl: running.backend.url, simulatorUrl: '', appid: DEMO.appid, wx, backoff: 20, confirmBackoff: 50 }, settings))
  return { wx, control }
}

async function backend(running, control, path) {
  const res = await fetch(running.backend.url + path, {
    headers: { Authorization: 'Bearer ' + control.storage.get('shop.session') },
  })
  return res.json()
}

async function buy(wx, product = 'coffee') {
  const page = await open('checkout', wx, { product })
  await tap(page, '.buy')
  await until(() => page.data.outcome && !page.data.busy, 'an outcome on the checkout page')
  return page
}

describe('against a simulator and a backend (MD5)', () => {
  let running
  before(async () => { running = await startShop() })
  after(async () => { await running.stop() })

  test('the product list shows the catalog with prices in yuan', async () => {
    const { wx, control } = newUser(running)
    const page = await open('index', wx)
    assert.deepEqual(page.data.products.map((p) => [p.id, p.priceText]), [['coffee', '¥12.00'], ['tea', '¥8.00'], ['cake', '¥26.00']])
    await tap(page, '.buy')
    assert.deepEqual(control.calls.find((c) => c[0] === 'navigateTo'), ['navigateTo', '/pages/checkout/checkout?product=coffee'])
  })

  test('buy: the page shows paid and the backend has the order SUCCESS', async () => {
    const { wx, control } = newUser(running)
    const page = await buy(wx, 'tea')
    assert.equal(page.data.outcome, 'paid')
    assert.equal(text(page, '.message'), MESSAGES.paid)
    const order = await backend(running, control, '/api/orders/' + page.data.outTradeNo)
    assert.deepEqual([order.status, order.total_fee, order.product_id], ['SUCCESS', 800, 'tea'])
    const payments = control.calls.filter((c) => c[0] === 'requestPayment')
    assert.equal(payments.length, 1)
    assert.deepEqual(Object.keys(payments[0][1]).sort(), ['nonceStr', 'package', 'paySign', 'signType', 'timeStamp'])
  })

  test('cancel: NOTPAY, the page offers to pay again, and paying again pays the same order', async () => {
    const { wx, control } = newUser(running)
    control.payResult = 'CANCEL'
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'cancelled')
    assert.equal(text(page, '.message'), MESSAGES.cancelled)
    assert.equal(text(page, '.buy'), 'Pay again')
    const no = page.data.outTradeNo
    assert.equal((await backend(running, control, '/api/orders/' + no)).status, 'NOTPAY')
    control.payResult = 'SUCCESS'
    await tap(page, '.buy')
    await until(() => page.data.outcome === 'paid', 'paid after paying again')
    assert.equal(page.data.outTradeNo, no)
    const history = await backend(running, control, '/api/orders')
    assert.deepEqual(history.orders.map((o) => [o.out_trade_no, o.status]), [[no, 'SUCCESS']])
  })

  test('an expired session token: one new login, and the purchase goes through', async () => {
    const { wx, control } = newUser(running)
    await shop.login()
    control.storage.set('shop.session', 'expired-or-revoked-token')
    const logins = control.calls.filter((c) => c[0] === 'login').length
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'paid')
    assert.equal(control.calls.filter((c) => c[0] === 'login').length, logins + 1)
    const statuses = control.calls.filter((c) => c[0] === 'request' && c[2].endsWith('/api/orders'))
    assert.equal(statuses.length, 2)   // 401, then the same order again with the new token
    assert.equal(statuses[0][4]['Idempotency-Key'], statuses[1][4]['Idempotency-Key'])
  })

  test('a double tap on Buy makes one order', async () => {
    const { wx, control } = newUser(running)
    const page = await open('checkout', wx, { product: 'cake' })
    const first = tap(page, '.buy')     // the second tap comes before the first is handled
    await tap(page, '.buy')
    await first
    await until(() => page.data.outcome && !page.data.busy, 'an outcome')
    assert.equal(page.data.outcome, 'paid')
    const history = await backend(running, control, '/api/orders')
    assert.equal(history.orders.length, 1)
    // and the client alone: the same key from two calls at once is one order
    const key = shop.newCheckoutKey()
    const [a, b] = await Promise.all([shop.createOrder({ productId: 'tea', key }), shop.createOrder({ productId: 'tea', key })])
    assert.equal(a.out_trade_no, b.out_trade_no)
    assert.equal((await backend(running, control, '/api/orders')).orders.length, 2)
  })

  test('the backend answering 502: a clear message, nothing stuck, and the retry makes the same order', async () => {
    const { wx, control } = newUser(running)
    await shop.login()
    const fault = await fetch(running.sim.url + '/sim/faults', {
      method: 'POST', body: JSON.stringify({ path: '/pay/unifiedorder', kind: 'status', value: 500 }),
    })
    assert.equal(fault.status, 201)
    let page
    try {
      page = await buy(wx)
      assert.equal(page.data.outcome, 'error')
      assert.equal(text(page, '.message'), MESSAGES.upstream)
      assert.equal(page.data.busy, false)
      assert.equal(text(page, '.buy'), 'Try again')
    } finally {
      await fetch(running.sim.url + '/sim/faults', { method: 'DELETE' })
    }
    await tap(page, '.buy')
    await until(() => page.data.outcome === 'paid', 'paid once WeChat answers again')
    const history = await backend(running, control, '/api/orders')
    assert.equal(history.orders.length, 1)
  })

  test('after a failed first attempt the quantity is frozen, so the retry is the same order', async () => {
    const { wx, control } = newUser(running)
    await shop.login()
    await fetch(running.sim.url + '/sim/faults', {
      method: 'POST', body: JSON.stringify({ path: '/pay/unifiedorder', kind: 'status', value: 500, count: 3 }),
    })
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'error')
    await tap(page, '.more')
    assert.equal(page.data.quantity, 1)             // the key already names quantity 1
    await tap(page, '.buy')
    await until(() => page.data.outcome === 'paid', 'paid on the retry')
    const history = await backend(running, control, '/api/orders')
    assert.deepEqual(history.orders.map((o) => o.quantity), [1])
  })

  test('order detail: close an unpaid order; pay another from its page', async () => {
    const { wx, control } = newUser(running)
    control.payResult = 'CANCEL'
    const first = await buy(wx)
    const detail = await open('order', wx, { no: first.data.outTradeNo })
    assert.equal(text(detail, '.status'), 'Awaiting payment')
    await tap(detail, '.close')
    await until(() => detail.data.order && detail.data.order.status === 'CLOSED' && !detail.data.busy, 'closed')
    assert.equal(detail.querySelector('.pay'), undefined)
    const second = await buy(wx, 'tea')
    control.payResult = 'SUCCESS'
    const other = await open('order', wx, { no: second.data.outTradeNo })
    await tap(other, '.pay')
    await until(() => other.data.order && other.data.order.status === 'SUCCESS' && !other.data.busy, 'paid from the detail page')
    assert.equal(other.data.outcome, 'paid')
    assert.equal(text(other, '.status'), 'Paid')
  })

  test('order history: the user\'s orders, newest first, a page at a time', async () => {
    const { wx } = newUser(running)
    for (const product of ['coffee', 'tea', 'cake']) await buy(wx, product)
    const page = await open('orders', wx)
    assert.deepEqual(page.data.orders.map((o) => o.product_id), ['cake', 'tea', 'coffee'])
    assert.deepEqual(page.data.orders.map((o) => o.statusText), ['Paid', 'Paid', 'Paid'])
    assert.equal(page.querySelector('.more'), undefined)
    await tap(page, '.order-item')
    assert.ok(wx.navigateTo)
  })
})

describe('HMAC-SHA256', () => {
  let running
  before(async () => { running = await startShop({ signType: 'HMAC-SHA256' }) })
  after(async () => { await running.stop() })

  test('buy with an HMAC-SHA256 backend', async () => {
    const { wx, control } = newUser(running)
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'paid')
    const [, fields] = control.calls.find((c) => c[0] === 'requestPayment')
    assert.equal(fields.signType, 'HMAC-SHA256')
    assert.equal((await backend(running, control, '/api/orders/' + page.data.outTradeNo)).status, 'SUCCESS')
  })
})

describe('WeChat Pay v3 (the client kit unchanged)', () => {
  let running
  before(async () => { running = await startShop({ payVersion: 'v3' }) })
  after(async () => { await running.stop() })

  test('cancel, then pay the same order again, with a v3 backend (signType RSA)', async () => {
    const { wx, control } = newUser(running)
    control.payResult = 'CANCEL'
    const page = await buy(wx, 'cake')
    assert.equal(page.data.outcome, 'cancelled')
    const no = page.data.outTradeNo
    control.payResult = 'SUCCESS'
    await tap(page, '.buy')
    await until(() => page.data.outcome === 'paid', 'paid after paying again')
    assert.equal(page.data.outTradeNo, no)
    const payments = control.calls.filter((c) => c[0] === 'requestPayment').map((c) => c[1])
    assert.deepEqual(payments.map((p) => [p.signType, p.package]), [['RSA', payments[0].package], ['RSA', payments[0].package]])
    const order = await backend(running, control, '/api/orders/' + no)
    assert.deepEqual([order.status, order.total_fee], ['SUCCESS', 2600])
    const simOrder = await (await fetch(running.sim.url + '/sim/orders/' + no)).json()
    assert.deepEqual([simOrder.api, simOrder.trade_state], ['v3', 'SUCCESS'])
  })
})

describe('developer mode (WeChat DevTools against the simulator)', () => {
  let running
  before(async () => { running = await startShop({ acceptUnknownCodes: true }) })
  after(async () => { await running.stop() })
  beforeEach(() => {})

  test('a login code the simulator never issued, and the simulator playing the phone', async () => {
    const { wx, control } = newUser(running)
    shop.configure({ simulatorUrl: running.sim.url })
    control.loginCode = 'devtools-made-this-code-' + Date.now()   // what DevTools' wx.login gives
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'paid')
    assert.equal(control.calls.filter((c) => c[0] === 'requestPayment').length, 0)
    assert.ok(control.calls.some((c) => c[0] === 'showActionSheet'))
    assert.ok(control.calls.some((c) => c[0] === 'request' && c[2] === running.sim.url + '/sim/pay'))
    assert.equal((await backend(running, control, '/api/orders/' + page.data.outTradeNo)).status, 'SUCCESS')
    const simOrder = await (await fetch(running.sim.url + '/sim/orders/' + page.data.outTradeNo)).json()
    assert.equal(simOrder.openid, (await (await fetch(running.sim.url + '/sim/login', {
      method: 'POST', body: JSON.stringify({ appid: DEMO.appid, user: 'developer' }),
    })).json()).openid)
  })

  test('developer mode: "Cancel" in the simulated phone leaves the order unpaid', async () => {
    const { wx, control } = newUser(running)
    shop.configure({ simulatorUrl: running.sim.url })
    control.loginCode = 'devtools-other-code-' + Date.now()
    control.actionSheetIndex = 1
    const page = await buy(wx)
    assert.equal(page.data.outcome, 'cancelled')
    assert.equal((await backend(running, control, '/api/orders/' + page.data.outTradeNo)).status, 'NOTPAY')
  })
})
