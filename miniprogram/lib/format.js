// Presentation helpers of the sample pages (money is integer fen everywhere else).
function yuan(fen) {
  return '¥' + (fen / 100).toFixed(2)
}

const STATUS_TEXT = {
  NOTPAY: 'Awaiting payment',
  SUCCESS: 'Paid',
  REFUND: 'Refunded',
  CLOSED: 'Closed',
  PAYERROR: 'Payment failed',
}

function statusText(status) {
  return STATUS_TEXT[status] || status
}

module.exports = { yuan, statusText }
