// Where the sample shop finds its backend. See docs/miniprogram.md.
module.exports = {
  // the backend (run_server.py); in production the https domain you registered in the
  // Mini Program admin console (request legal domain)
  baseUrl: 'http://127.0.0.1:8000',
  // Developer mode: the bundled simulator plays the user's phone instead of
  // wx.requestPayment. Only for WeChat DevTools with `run_server.py --simulator`; remove it
  // (or set '') for a real phone. Only a development build uses it (envVersion 'develop');
  // trial and release builds ignore it.
  simulatorUrl: 'https://127.0.0.1:9000',
  // the Mini Program's appid (the demo appid of the simulator)
  appid: 'wxd930ea5d5a258f4f',
}
