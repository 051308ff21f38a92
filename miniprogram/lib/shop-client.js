/**
 * shop-client.js: the Mini Program side of wxpay-tornado, in one file without dependencies.
 * Copy it into any Mini Program.
 *
 *   const { createClient } = require('./lib/shop-client')
 *   const shop = createClient({ baseUrl: 'https://shop.example.com' })
 *   const key = shop.newCheckoutKey()                 // once per checkout
 *   const order = await shop.createOrder({ productId: 'coffee', quantity: 1, key })
 *   const result = await shop.pay(order)              // { outcome, message, order }
 *
 * What it does for you:
 * - login: wx.login -> POST /api/login; the session token is kept in storage; a call answered
 *   401 logs in again once and is repeated once.
 * - retries: a network failure or a 502/503/504 is retried with growing gaps, but only where
 *   that is safe (reads; an order with its Idempotency-Key; repay; close). Creating an order
 *   reuses the checkout's Idempotency-Key, so a double tap or a retry makes one order.
 * - pay: wx.requestPayment with exactly the five fields the backend signed. Nothing is signed
 *   here and no key is ever in the Mini Program. 'requestPayment:ok' is not proof of payment:
 *   the backend is asked (?refresh=1, with backoff, until a deadline) and its status decides.
 *   The outcome is 'paid', 'cancelled', 'failed' or 'pending', with a message for the user.
 * - developer mode (simulatorUrl set, never in a release build): pay() asks the simulator to
 *   play the phone (POST /sim/pay) instead of wx.requestPayment, so a purchase completes in
 *   WeChat DevTools against the local simulator.
 */
'use strict'

const DEFAULTS = {
  baseUrl: '',                 // the backend, e.g. https://shop.example.com
  simulatorUrl: '',            // developer mode only: the simulator plays the phone
  appid: '',                   // the Mini Program's appid (developer mode sends it to /sim/pay)
  tokenKey: 'shop.session',    // storage key of the session token
  timeout: 10000,              // ms for one request
  retries: 2,                  // extra attempts after a network failure or 502/503/504
  backoff: 400,                // ms before the first retry; doubles each time
  confirmDeadline: 15000,      // ms to wait for the backend to confirm a payment
  confirmBackoff: 500,         // ms before asking again; doubles, up to confirmMaxGap
  confirmMaxGap: 4000,
}

const PAID = ['SUCCESS', 'REFUND']
const RETRYABLE_STATUS = [502, 503, 504]
const PHONE_RESULTS = ['SUCCESS', 'CANCEL', 'FAIL']
const MESSAGES = {
  network: 'Cannot reach the shop. Check your connection and try again.',
  upstream: 'WeChat Pay is not answering right now. Please try again in a moment.',
  busy: 'The shop is busy. Please try again in a moment.',
  paid: 'Paid. Thank you!',
  cancelled: 'Payment cancelled. You can pay again.',
  failed: 'The payment did not go through. You can try again.',
  closed: 'This order was closed.',
  pending: 'WeChat has not confirmed the payment yet. Your order will update by itself; check it in a moment.',
}

class ShopError extends Error {
  /** status: HTTP status (0: no answer); code: the backend's error code; wechatCode: WeChat's. */
  constructor(message, { status = 0, code = 'NETWORK', wechatCode, retryable = false } = {}) {
    super(message)
    this.name = 'ShopError'
    this.status = status
    this.code = code
    this.wechatCode = wechatCode
    this.retryable = retryable
  }
}

function createClient(options) {
  const settings = Object.assign({}, DEFAULTS)
  let env = { wx: null, sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)), now: () => Date.now() }

  function configure(more) {
    const { wx: injected, sleep, now, ...rest } = more || {}
    Object.assign(settings, rest)
    if (injected) env.wx = injected
    if (sleep) env.sleep = sleep
    if (now) env.now = now
    return client
  }

  function wxApi() {
    // the global wx of the Mini Program, unless one was injected (tests)
    return env.wx || (typeof wx === 'object' ? wx : null)
  }

  /** Developer mode is on only with a simulatorUrl, and only in a development build
   * (envVersion 'develop': WeChat DevTools or a developer's preview; never trial or release,
   * and off when that cannot be told). */
  function devMode() {
    if (!settings.simulatorUrl) return false
    const api = wxApi()
    const info = api.getAccountInfoSync ? api.getAccountInfoSync() : null
    return Boolean(info && info.miniProgram && info.miniProgram.envVersion === 'develop')
  }

  // -- transport -------------------------------------------------------------------------
  function wxRequest(url, method, data, header) {
    return new Promise((resolve) => {
      wxApi().request({
        url, method, data, header, timeout: settings.timeout, dataType: 'json',
        success: (res) => resolve({ status: res.statusCode, data: res.data }),
        fail: (res) => resolve({ status: 0, errMsg: (res && res.errMsg) || 'request:fail' }),
      })
    })
  }

  function errorOf(res) {
    if (res.status === 0) return new ShopError(MESSAGES.network, { retryable: true })
    const error = (res.data && res.data.error) || {}
    const retryable = RETRYABLE_STATUS.includes(res.status)
    const message = res.status === 503 ? MESSAGES.busy : retryable ? MESSAGES.upstream
      : error.message || 'The shop answered ' + res.status
    return new ShopError(message, {
      status: res.status, code: error.code || 'HTTP_' + res.status, wechatCode: error.wechat_code, retryable,
    })
  }

  /**
   * One backend call. auth: send the session token (logging in when there is none, and once
   * more on a 401). retry: whether repeating it is safe. key: an Idempotency-Key.
   */
  async function call(method, path, { data, auth = true, retry = true, key } = {}) {
    let relogged = false
    for (let attempt = 0; ; attempt++) {
      const header = { 'Content-Type': 'application/json' }
      if (auth) header.Authorization = 'Bearer ' + (token() || (await sharedLogin()))
      if (key) header['Idempotency-Key'] = key
      const res = await wxRequest(settings.baseUrl + path, method, data, header)
      if (res.status >= 200 && res.status < 300) return res.data
      if (res.status === 401 && auth && !relogged) {
        relogged = true     // the token expired or was revoked: one new login, then once more
        forgetToken()
        await sharedLogin()
        attempt--
        continue
      }
      const error = errorOf(res)
      if (!(retry && error.retryable && attempt < settings.retries)) throw error
      await env.sleep(settings.backoff * Math.pow(2, attempt))
    }
  }

  // -- session ---------------------------------------------------------------------------
  function token() {
    return wxApi().getStorageSync(settings.tokenKey) || ''
  }

  function forgetToken() {
    wxApi().removeStorageSync(settings.tokenKey)
  }

  function wxLogin() {
    return new Promise((resolve, reject) => {
      wxApi().login({
        success: (res) => resolve(res.code),
        fail: (res) => reject(new ShopError('WeChat login failed: ' + ((res && res.errMsg) || 'unknown'), { code: 'WX_LOGIN' })),
      })
    })
  }

  let loggingIn = null
  function sharedLogin() {
    // calls that find no token at the same moment share one login
    if (!loggingIn) loggingIn = login().finally(() => { loggingIn = null })
    return loggingIn
  }

  /** wx.login -> POST /api/login; the token is stored and returned. A fresh code per attempt
   * (a code is single-use, so a failed attempt cannot be repeated with the same one). */
  async function login() {
    for (let attempt = 0; ; attempt++) {
      const code = await wxLogin()
      try {
        const answer = await call('POST', '/api/login', { data: { code }, auth: false, retry: false })
        wxApi().setStorageSync(settings.tokenKey, answer.token)
        return answer.token
      } catch (error) {
        if (!(error.retryable && attempt < settings.retries)) throw error
        await env.sleep(settings.backoff * Math.pow(2, attempt))
      }
    }
  }

  // -- shop ------------------------------------------------------------------------------
  async function products() {
    return (await call('GET', '/api/products', { auth: false })).products
  }

  /** A new Idempotency-Key: make one per checkout and pass it to every createOrder of it. */
  function newCheckoutKey() {
    const random = () => Math.floor(Math.random() * 0x100000000).toString(36)
    return 'ck-' + env.now().toString(36) + '-' + random() + random()
  }

  /** POST /api/orders: { out_trade_no, status, total_fee, payment, ... } (the price is the backend's). */
  async function createOrder({ productId, quantity = 1, key }) {
    if (!key) throw new Error('createOrder needs the checkout key (newCheckoutKey())')
    return call('POST', '/api/orders', { data: { product_id: productId, quantity }, key })
  }

  /** Fresh payment parameters for an unpaid order (POST /api/orders/<no>/payment). */
  async function repay(outTradeNo) {
    return call('POST', '/api/orders/' + encodeURIComponent(outTradeNo) + '/payment')
  }

  async function order(outTradeNo, { refresh = false } = {}) {
    return call('GET', '/api/orders/' + encodeURIComponent(outTradeNo) + (refresh ? '?refresh=1' : ''))
  }

  /** The user's orders, newest first: { orders, next? }; pass next as before for more. */
  async function orders({ limit = 20, before } = {}) {
    const query = '?limit=' + limit + (before ? '&before=' + encodeURIComponent(before) : '')
    return call('GET', '/api/orders' + query)
  }

  async function close(outTradeNo) {
    return call('POST', '/api/orders/' + encodeURIComponent(outTradeNo) + '/close')
  }

  // -- paying ----------------------------------------------------------------------------
  /** The phone's part: { result: 'ok' | 'cancel' | 'fail', errMsg }. */
  function requestPayment(payment) {
    // exactly the five fields the backend signed: nothing is added, nothing computed here
    const { timeStamp, nonceStr, signType, paySign } = payment
    return new Promise((resolve) => {
      wxApi().requestPayment({
        timeStamp, nonceStr, package: payment.package, signType, paySign,
        success: (res) => resolve({ result: 'ok', errMsg: res.errMsg }),
        fail: (res) => resolve(phoneFailure(res && res.errMsg)),
      })
    })
  }

  function phoneFailure(errMsg) {
    const text = errMsg || 'requestPayment:fail'
    return { result: /cancel/.test(text) ? 'cancel' : 'fail', errMsg: text }
  }

  /** Developer mode: the simulator plays the phone; the developer picks what the user does. */
  async function simulatedPayment(payment, choice) {
    const result = choice || (await askDeveloper())
    const res = await wxRequest(settings.simulatorUrl + '/sim/pay', 'POST', {
      appid: settings.appid, timeStamp: payment.timeStamp, nonceStr: payment.nonceStr,
      package: payment.package, signType: payment.signType, paySign: payment.paySign, result,
    }, { 'Content-Type': 'application/json' })
    if (res.status === 200) return { result: 'ok', errMsg: res.data && res.data.errMsg }
    return phoneFailure(res.data && res.data.errMsg || res.errMsg)
  }

  function askDeveloper() {
    return new Promise((resolve) => {
      wxApi().showActionSheet({
        itemList: ['Pay (simulated)', 'Cancel', 'Fail'],
        success: (res) => resolve(PHONE_RESULTS[res.tapIndex] || 'CANCEL'),
        fail: () => resolve('CANCEL'),
      })
    })
  }

  /**
   * Pay an order returned by createOrder or repay (it carries `payment`). Resolves to
   * { outcome: 'paid' | 'cancelled' | 'failed' | 'pending', message, order }; rejects only
   * when the order itself cannot be read (ShopError).
   * options.result: in developer mode, what the simulated user does (SUCCESS, CANCEL, FAIL).
   */
  async function pay(created, options = {}) {
    if (!created.payment) return settled(created)   // a replay of an order paid or closed meanwhile
    const phone = devMode() ? await simulatedPayment(created.payment, options.result)
      : await requestPayment(created.payment)
    if (phone.result === 'ok') return confirm(created.out_trade_no)
    // the phone said cancel or fail, yet the order may be paid (an earlier attempt went
    // through, or the answer came late): the backend's word wins
    const known = await latest(created)
    if (PAID.includes(known.status)) return outcome('paid', known)
    if (known.status === 'CLOSED') return outcome('failed', known, MESSAGES.closed)
    const name = phone.result === 'cancel' ? 'cancelled' : 'failed'
    return Object.assign(outcome(name, known), name === 'failed' ? { detail: phone.errMsg } : {})
  }

  /** The order as the backend knows it now (asking WeChat); as it was if that fails. */
  async function latest(created) {
    try {
      return await order(created.out_trade_no, { refresh: true })
    } catch (error) {
      return created
    }
  }

  /** The outcome of an order that has nothing left to pay. */
  function settled(created) {
    if (PAID.includes(created.status)) return outcome('paid', created)
    if (created.status === 'CLOSED') return outcome('failed', created, MESSAGES.closed)
    return outcome('failed', created)
  }

  /** Ask the backend (which asks WeChat) until the order is settled or the deadline passes. */
  async function confirm(outTradeNo) {
    const deadline = env.now() + settings.confirmDeadline
    let gap = settings.confirmBackoff
    let last = { out_trade_no: outTradeNo, status: 'NOTPAY' }
    for (;;) {
      try {
        last = await order(outTradeNo, { refresh: true })
      } catch (error) {
        if (!error.retryable) throw error  // the backend answered 4xx: nothing to wait for
      }
      if (PAID.includes(last.status)) return outcome('paid', last)
      if (last.status === 'PAYERROR') return outcome('failed', last)
      if (last.status === 'CLOSED') return outcome('failed', last, MESSAGES.closed)
      if (env.now() + gap > deadline) return outcome('pending', last)
      await env.sleep(gap)
      gap = Math.min(gap * 2, settings.confirmMaxGap)
    }
  }

  function outcome(name, orderView, message) {
    return { outcome: name, message: message || MESSAGES[name], order: orderView }
  }

  const client = {
    configure, settings, devMode, login, products, newCheckoutKey, createOrder, repay, order,
    orders, close, pay, confirm, forgetToken, ShopError, MESSAGES,
  }
  return configure(options)
}

module.exports = { createClient, ShopError, MESSAGES, DEFAULTS }
