// One order: its status as the backend knows it (asking WeChat while it is unpaid), pay, close.
const shop = require('../../shop')
const { yuan, statusText } = require('../../lib/format')

const UNPAID = ['NOTPAY', 'PAYERROR']

Component({
  data: { order: null, unpaid: false, busy: false, outcome: '', message: '' },
  methods: {
    onLoad(options) {
      this.no = options.no
      return this.load(true)
    },
    async load(refresh) {
      try {
        const order = await shop.order(this.no, { refresh })
        this.setData({
          order: Object.assign({ totalText: yuan(order.total_fee), statusText: statusText(order.status) }, order),
          unpaid: UNPAID.includes(order.status),
        })
      } catch (error) {
        this.setData({ outcome: 'error', message: error.message })
      }
    },
    async pay() {
      await this.act(async () => {
        const result = await shop.pay(await shop.repay(this.no))
        this.setData({ outcome: result.outcome, message: result.message })
      })
    },
    async close() {
      await this.act(async () => {
        await shop.close(this.no)
        this.setData({ outcome: 'cancelled', message: 'The order is closed.' })
      })
    },
    async act(work) {
      if (this.data.busy) return
      this.setData({ busy: true, outcome: '', message: '' })
      try {
        await work()
      } catch (error) {
        this.setData({ outcome: 'error', message: error.message })
      } finally {
        await this.load(false)
        this.setData({ busy: false })
      }
    },
  },
})
