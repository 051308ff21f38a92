// The app's one shop client, configured from config.js; every page requires this module.
const { createClient } = require('./lib/shop-client')
const config = require('./config')

module.exports = createClient(config)
