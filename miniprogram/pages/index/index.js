// Product list: prices come from the backend's catalog (the Mini Program never sets one).
const shop = require('../../shop')
const { yuan } = require('../../lib/format')

Component({
  data: { products: [], loading: true, error: '' },
  methods: {
    onLoad() {
      return this.load()
    },
    async load() {
      this.setData({ loading: true, error: '' })
      try {
        const products = await shop.products()
        this.setData({ products: products.map((p) => Object.assign({ priceText: yuan(p.price) }, p)) })
      } catch (error) {
        this.setData({ error: error.message })
      } finally {
        this.setData({ loading: false })
      }
    },
    buy(event) {
      wx.navigateTo({ url: '/pages/checkout/checkout?product=' + event.currentTarget.dataset.id })
    },
    history() {
      wx.navigateTo({ url: '/pages/orders/orders' })
    },
  },
})
