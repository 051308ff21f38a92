// The wx APIs the sample pages and the client module use, played against real processes:
// wx.login -> the simulator's /sim/login, wx.request -> HTTP, wx.requestPayment -> /sim/pay,
// storage in memory. Every call is recorded in `calls`.
'use strict'
const { DEMO } = require('./processes')

function createWx({ simUrl, user = 'alice', appid = DEMO.appid } = {}) {
  const storage = new Map()
  const calls = []
  const control = {
    payResult: 'SUCCESS',        // what the user does in wx.requestPayment
    actionSheetIndex: 0,         // the button tapped in wx.showActionSheet
    loginCode: null,             // a fixed wx.login code (developer mode: one Tencent issued)
    envVersion: 'develop',
    calls, storage,
  }

  async function http(url, method, data, header) {
    const init = { method: method || 'GET', headers: Object.assign({}, header || {}) }
    if (data !== undefined && init.method !== 'GET') {
      init.body = JSON.stringify(data)
      init.headers['Content-Type'] = 'application/json'
    }
    const res = await fetch(url, init)
    const text = await res.text()
    let body = text
    try { body = JSON.parse(text) } catch (e) { /* not JSON: wx.request passes the text */ }
    return { statusCode: res.status, data: body, header: Object.fromEntries(res.headers) }
  }

  const wx = {
    login({ success, fail }) {
      calls.push(['login'])
      const done = control.loginCode
        ? Promise.resolve({ errMsg: 'login:ok', code: control.loginCode })
        : http(simUrl + '/sim/login', 'POST', { appid, user }).then((r) => ({ errMsg: 'login:ok', code: r.data.code }))
      done.then(success, (e) => fail && fail({ errMsg: 'login:fail ' + e.message }))
    },
    request({ url, method, data, header, success, fail }) {
      calls.push(['request', method || 'GET', url, data, header])
      http(url, method, data, header).then(success, (e) => fail && fail({ errMsg: 'request:fail ' + e.message }))
    },
    requestPayment(params) {
      const { success, fail, complete, ...fields } = params
      calls.push(['requestPayment', fields])
      const body = Object.assign({ appid, result: control.payResult }, fields)
      http(simUrl + '/sim/pay', 'POST', body).then((r) => {
        if (r.statusCode === 200 && r.data.errMsg === 'requestPayment:ok') success({ errMsg: 'requestPayment:ok' })
        else fail({ errMsg: r.data.errMsg || 'requestPayment:fail' })
      }, (e) => fail({ errMsg: 'requestPayment:fail ' + e.message }))
    },
    showActionSheet({ itemList, success }) {
      calls.push(['showActionSheet', itemList])
      setTimeout(() => success({ tapIndex: control.actionSheetIndex }), 0)
    },
    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => { storage.set(key, value) },
    removeStorageSync: (key) => { storage.delete(key) },
    navigateTo({ url }) { calls.push(['navigateTo', url]) },
    getAccountInfoSync: () => ({ miniProgram: { appId: appid, envVersion: control.envVersion } }),
  }
  return { wx, control }
}

module.exports = { createWx }
