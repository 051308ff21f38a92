// Unit tests of the client module (miniprogram/lib/shop-client.js) with a scripted wx: retries,
// backoff, re-login, Idempotency-Key reuse, the five payment fields, outcome mapping, dev mode.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { createClient, MESSAGES } = require(path.join(__dirname, '..', '..', 'miniprogram', 'lib', 'shop-client'))

const PAYMENT = { timeStamp: '1700000000', nonceStr: 'n0nce', package: 'prepay_id=wx1', signType: 'MD5', paySign: 'ABC' }

/** A wx whose request answers come from `route(method, path, data, header)`: a response
 * {status, data}, or null for a network failure. Clock and sleeps are fake. */
function fixture(route, { payResult = 'ok', envVersion = 'develop', actionSheetIndex = 0 } = {}) {
  const log = { requests: [], sleeps: [], logins: 0, payments: [], sheets: 0 }
  let clock = 0
  const storage = new Map()
  const wx = {
    request({ url, method, data, header, success, fail }) {
      const p = url.replace(/^https?:\/\/[^/]+/, '')
      log.requests.push({ method, path: p, data, header, url })
      const answer = route(method, p, data, header)
      setImmediate(() => (answer ? success({ statusCode: answer.status, data: answer.data }) : fail({ errMsg: 'request:fail timeout' })))
    },
    login({ success }) { log.logins++; setImmediate(() => success({ code: 'code-' + log.logins })) },
    requestPayment(params) {
      const { success, fail, ...fields } = params
      log.payments.push(fields)
      setImmediate(() => (payResult === 'ok' ? success({ errMsg: 'requestPayment:ok' }) : fail({ errMsg: 'requestPayment:fail ' + payResult })))
    },
    showActionSheet({ success }) { log.sheets++; setImmediate(() => success({ tapIndex: actionSheetIndex })) },
    getStorageSync: (k) => storage.get(k) || '',
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k),
    getAccountInfoSync: () => ({ miniProgram: { envVersion } }),
  }
  const shop = createClient({
    baseUrl: 'https://shop.test', appid: 'wxd930ea5d5a258f4f', wx,
    sleep: async (ms) => { log.sleeps.push(ms); clock += ms },
    now: () => clock,
  })
  return { shop, log, storage }
}

const ok = (data) => ({ status: 200, data })
const fail = (status, code, message) => ({ status, data: { error: { code, message: message || code } } })

function loginThen(route) {
  return (method, p, data, header) => (p === '/api/login' ? ok({ token: 'tok-' + data.code, expires_in: 7200 }) : route(method, p, data, header))
}

test('network failures are retried with doubling gaps, then succeed', async () => {
  let n = 0
  const { shop, log } = fixture(() => (++n < 3 ? null : ok({ products: [{ id: 'coffee' }] })))
  assert.deepEqual(await shop.products(), [{ id: 'coffee' }])
  assert.equal(log.requests.length, 3)
  assert.deepEqual(log.sleeps, [400, 800])
})

test('502s are retried at most `retries` times and end in a clear message', async () => {
  const { shop, log } = fixture(loginThen(() => fail(502, 'UPSTREAM_ERROR', 'WeChat: unifiedorder answered HTTP 500')))
  await assert.rejects(shop.order('T1'), (e) => e.status === 502 && e.code === 'UPSTREAM_ERROR' && e.message === MESSAGES.upstream)
  assert.equal(log.requests.filter((r) => r.path === '/api/orders/T1').length, 3)
})

test('a 4xx is not retried and keeps the backend message', async () => {
  const { shop, log } = fixture(loginThen(() => fail(409, 'ORDER_PAID', 'the order is already paid')))
  await assert.rejects(shop.close('T1'), (e) => e.code === 'ORDER_PAID' && e.message === 'the order is already paid' && !e.retryable)
  assert.equal(log.requests.filter((r) => r.path.startsWith('/api/orders')).length, 1)
  assert.deepEqual(log.sleeps, [])
})

test('a 401 logs in again once and repeats the call once; never a loop', async () => {
  const seen = []
  const { shop, log, storage } = fixture(loginThen((m, p, d, header) => {
    seen.push(header.Authorization)
    return header.Authorization === 'Bearer tok-code-1' ? ok({ out_trade_no: 'T1', status: 'NOTPAY' }) : fail(401, 'UNAUTHORIZED')
  }))
  storage.set('shop.session', 'expired')
  assert.equal((await shop.order('T1')).status, 'NOTPAY')
  assert.deepEqual(seen, ['Bearer expired', 'Bearer tok-code-1'])
  assert.equal(log.logins, 1)
  assert.equal(storage.get('shop.session'), 'tok-code-1')
})

test('a second 401 after the new login is an error, after exactly one re-login', async () => {
  const { shop, log } = fixture(loginThen(() => fail(401, 'UNAUTHORIZED')))
  await assert.rejects(shop.order('T1'), (e) => e.status === 401)
  assert.equal(log.logins, 2)   // the first login (no token yet) and the one re-login
  assert.equal(log.requests.filter((r) => r.path === '/api/orders/T1').length, 2)
})

test('login takes a fresh wx.login code for each attempt', async () => {
  let n = 0
  const { shop, log } = fixture((m, p, data) => (p === '/api/login' ? (++n < 2 ? fail(504, 'UPSTREAM_TIMEOUT') : ok({ token: 't', expires_in: 1 })) : null))
  assert.equal(await shop.login(), 't')
  assert.deepEqual(log.requests.map((r) => r.data.code), ['code-1', 'code-2'])
})

test('createOrder sends the checkout key on every retry, and refuses to run without one', async () => {
  let n = 0
  const { shop, log } = fixture(loginThen(() => (++n < 3 ? fail(504, 'UPSTREAM_TIMEOUT') : { status: 201, data: { out_trade_no: 'T1' } })))
  const key = shop.newCheckoutKey()
  assert.equal((await shop.createOrder({ productId: 'coffee', quantity: 2, key })).out_trade_no, 'T1')
  const creates = log.requests.filter((r) => r.path === '/api/orders')
  assert.equal(creates.length, 3)
  assert.ok(creates.every((r) => r.header['Idempotency-Key'] === key && r.data.product_id === 'coffee' && r.data.quantity === 2))
  assert.ok(/^[!-~]{1,64}$/.test(key) && key !== shop.newCheckoutKey())
  await assert.rejects(shop.createOrder({ productId: 'coffee' }), /checkout key/)
})

function payRoute(statuses) {
  let i = 0
  return loginThen((m, p) => ok({ out_trade_no: 'T1', status: statuses[Math.min(i++, statuses.length - 1)] }))
}

test('pay hands wx.requestPayment exactly the five signed fields', async () => {
  const { shop, log } = fixture(payRoute(['SUCCESS']))
  const result = await shop.pay({ out_trade_no: 'T1', payment: Object.assign({ extra: 'x' }, PAYMENT) })
  assert.deepEqual(log.payments, [PAYMENT])
  assert.deepEqual([result.outcome, result.message, result.order.status], ['paid', MESSAGES.paid, 'SUCCESS'])
  assert.equal(log.requests.find((r) => r.path.startsWith('/api/orders/')).path, '/api/orders/T1?refresh=1')
})

test('requestPayment:ok is not proof: the backend is asked until it says SUCCESS', async () => {
  const { shop, log } = fixture(payRoute(['NOTPAY', 'NOTPAY', 'SUCCESS']))
  const result = await shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.equal(result.outcome, 'paid')
  assert.deepEqual(log.sleeps, [500, 1000])
})

test('no confirmation before the deadline is pending, with backoff capped', async () => {
  const { shop, log } = fixture(payRoute(['NOTPAY']))
  const result = await shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.deepEqual([result.outcome, result.message], ['pending', MESSAGES.pending])
  assert.deepEqual(log.sleeps, [500, 1000, 2000, 4000, 4000])   // 11.5 s; the next gap would pass 15 s
})

test('outcome mapping: cancel, phone failure, PAYERROR, CLOSED', async () => {
  const cancelled = await fixture(payRoute(['NOTPAY']), { payResult: 'cancel' }).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.deepEqual([cancelled.outcome, cancelled.message], ['cancelled', MESSAGES.cancelled])
  const failed = await fixture(payRoute(['NOTPAY']), { payResult: 'system error' }).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.deepEqual([failed.outcome, failed.detail], ['failed', 'requestPayment:fail system error'])
  const payError = await fixture(payRoute(['PAYERROR'])).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.equal(payError.outcome, 'failed')
  const closed = await fixture(payRoute(['CLOSED'])).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.deepEqual([closed.outcome, closed.message], ['failed', MESSAGES.closed])
})

test('while confirming, network failures keep it asking; a 404 ends it', async () => {
  let n = 0
  const flaky = fixture(loginThen(() => (++n < 3 ? null : ok({ out_trade_no: 'T1', status: 'SUCCESS' }))))
  assert.equal((await flaky.shop.pay({ out_trade_no: 'T1', payment: PAYMENT })).outcome, 'paid')
  const gone = fixture(loginThen(() => fail(404, 'ORDER_NOT_FOUND', 'no such order')))
  await assert.rejects(gone.shop.pay({ out_trade_no: 'T1', payment: PAYMENT }), (e) => e.code === 'ORDER_NOT_FOUND')
})

test('developer mode: the simulator plays the phone, with the result the developer picks', async () => {
  const sim = []
  let paid = false
  const { shop, log } = fixture((m, p, data) => {
    if (p === '/sim/pay') {
      sim.push(data)
      paid = paid || data.result === 'SUCCESS'
      return data.result === 'SUCCESS' ? ok({ errMsg: 'requestPayment:ok' }) : { status: 400, data: { errMsg: 'requestPayment:fail cancel' } }
    }
    return loginThen(() => ok({ out_trade_no: 'T1', status: paid ? 'SUCCESS' : 'NOTPAY' }))(m, p, data, {})
  }, { actionSheetIndex: 1 })
  shop.configure({ simulatorUrl: 'http://127.0.0.1:9000' })
  assert.equal(shop.devMode(), true)
  assert.equal((await shop.pay({ out_trade_no: 'T1', payment: PAYMENT })).outcome, 'cancelled')   // "Cancel" tapped
  assert.equal((await shop.pay({ out_trade_no: 'T1', payment: PAYMENT }, { result: 'SUCCESS' })).outcome, 'paid')
  assert.deepEqual(sim.map((d) => d.result), ['CANCEL', 'SUCCESS'])
  assert.deepEqual(sim[1], Object.assign({ appid: 'wxd930ea5d5a258f4f', result: 'SUCCESS' }, PAYMENT))
  assert.equal(log.payments.length, 0)
  assert.equal(log.requests.find((r) => r.path === '/sim/pay').url, 'http://127.0.0.1:9000/sim/pay')
})

test('developer mode applies only with simulatorUrl in a development build', async () => {
  const plain = fixture(payRoute(['SUCCESS']))
  assert.equal(plain.shop.devMode(), false)
  for (const envVersion of ['trial', 'release', null]) {   // null: it cannot be told
    const other = fixture(payRoute(['SUCCESS']), { envVersion })
    other.shop.configure({ simulatorUrl: 'http://127.0.0.1:9000' })
    assert.equal(other.shop.devMode(), false, String(envVersion))
  }
  const release = fixture(payRoute(['SUCCESS']), { envVersion: 'release' })
  release.shop.configure({ simulatorUrl: 'http://127.0.0.1:9000' })
  assert.equal(release.shop.devMode(), false)
  await release.shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.equal(release.log.payments.length, 1)
  assert.ok(!release.log.requests.some((r) => r.path === '/sim/pay'))
})

test('a phone failure or cancel on an order the backend knows is paid is "paid"', async () => {
  const failed = await fixture(payRoute(['SUCCESS']), { payResult: '该订单已支付' }).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.equal(failed.outcome, 'paid')
  const cancelled = await fixture(payRoute(['SUCCESS']), { payResult: 'cancel' }).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.equal(cancelled.outcome, 'paid')
  const closed = await fixture(payRoute(['CLOSED']), { payResult: 'cancel' }).shop.pay({ out_trade_no: 'T1', payment: PAYMENT })
  assert.deepEqual([closed.outcome, closed.message], ['failed', MESSAGES.closed])
})

test('an order with nothing to pay (a replay after it was paid or closed) is settled, not paid again', async () => {
  const { shop, log } = fixture(payRoute(['SUCCESS']))
  assert.equal((await shop.pay({ out_trade_no: 'T1', status: 'SUCCESS', payment: null })).outcome, 'paid')
  assert.equal((await shop.pay({ out_trade_no: 'T1', status: 'CLOSED', payment: null })).message, MESSAGES.closed)
  assert.equal(log.payments.length, 0)
})
