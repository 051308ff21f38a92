const shop = require('./shop')

App({
  onLaunch() {
    // nothing to do up front: the client logs in when a call first needs a session
    this.shop = shop
  },
})
