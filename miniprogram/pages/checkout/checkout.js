// Checkout: create the order (the backend prices it), pay, and show what the backend says.
const shop = require('../../shop')
const { yuan } = require('../../lib/format')

Component({
  data: {
    product: null, quantity: 1, totalText: '', busy: false, ordered: false,
    outcome: '', message: '', outTradeNo: '', buttonText: 'Pay',
  },
  methods: {
    async onLoad(options) {
      // one Idempotency-Key per checkout: a double tap or a retry makes one order
      this.key = shop.newCheckoutKey()
      this.order = null
      try {
        const product = (await shop.products()).find((p) => p.id === options.product)
        if (!product) throw new Error('This product is no longer sold.')
        this.setData({ product: Object.assign({ priceText: yuan(product.price) }, product) })
        this.updateTotal()
      } catch (error) {
        this.setData({ outcome: 'error', message: error.message })
      }
    },
    updateTotal() {
      this.setData({ totalText: yuan(this.data.product.price * this.data.quantity) })
    },
    more() {
      if (!this.data.ordered && this.data.quantity < 99) this.setData({ quantity: this.data.quantity + 1 })
      this.updateTotal()
    },
    less() {
      if (!this.data.ordered && this.data.quantity > 1) this.setData({ quantity: this.data.quantity - 1 })
      this.updateTotal()
    },
    async buy() {
      if (this.data.busy || !this.data.product || this.data.outcome === 'paid') return
      this.setData({ busy: true, outcome: '', message: '' })
      try {
        const result = this.data.outcome === 'pending' || this.pending
          ? await shop.confirm(this.order.out_trade_no)   // "Check again": ask, do not pay twice
          : await shop.pay(await this.payable())
        this.pending = result.outcome === 'pending'
        this.show(result.outcome, result.message, result.order)
      } catch (error) {
        this.show('error', error.message, this.order)
      } finally {
        this.setData({ busy: false })
      }
    },
    async payable() {
      if (!this.order) {
        // from the first attempt on, this checkout's key names this quantity: it is frozen
        // (a failed attempt may still have created the order at the backend)
        this.setData({ ordered: true })
        this.order = await shop.createOrder({
          productId: this.data.product.id, quantity: this.data.quantity, key: this.key,
        })
        this.setData({ outTradeNo: this.order.out_trade_no })
        return this.order
      }
      // paying again (after a cancel or a failure): fresh parameters, the same order
      this.order = await shop.repay(this.order.out_trade_no)
      return this.order
    },
    show(outcome, message, order) {
      const again = { cancelled: 'Pay again', failed: 'Try again', error: 'Try again', pending: 'Check again' }
      this.setData({
        outcome, message, outTradeNo: order ? order.out_trade_no : '',
        buttonText: again[outcome] || 'Pay',
      })
    },
    viewOrder() {
      wx.navigateTo({ url: '/pages/order/order?no=' + this.data.outTradeNo })
    },
  },
})
