// The user's orders, newest first, a page at a time.
const shop = require('../../shop')
const { yuan, statusText } = require('../../lib/format')

const PAGE = 20

Component({
  data: { orders: [], next: '', loading: false, error: '', empty: false },
  methods: {
    onLoad() {
      return this.more()
    },
    onPullDownRefresh() {
      this.setData({ orders: [], next: '' })
      return this.more()
    },
    async more() {
      if (this.data.loading) return
      this.setData({ loading: true, error: '' })
      try {
        const page = await shop.orders({ limit: PAGE, before: this.data.next || undefined })
        const shown = page.orders.map((o) => Object.assign({ totalText: yuan(o.total_fee), statusText: statusText(o.status) }, o))
        const orders = this.data.orders.concat(shown)
        this.setData({ orders, next: page.next || '', empty: orders.length === 0 })
      } catch (error) {
        this.setData({ error: error.message })
      } finally {
        this.setData({ loading: false })
      }
    },
    open(event) {
      wx.navigateTo({ url: '/pages/order/order?no=' + event.currentTarget.dataset.no })
    },
  },
})
