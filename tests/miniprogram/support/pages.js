// Rendering the sample's real pages with miniprogram-simulate under node's test runner.
'use strict'
require('global-jsdom')()   // miniprogram-simulate expects a browser-like global
const path = require('node:path')
const simulate = require('miniprogram-simulate')
const { ROOT } = require('./processes')

const MINIPROGRAM = path.join(ROOT, 'miniprogram')
const shop = require(path.join(MINIPROGRAM, 'shop'))   // the same instance the pages require

/** Render a page (by name) with the given wx; calls its onLoad(options). */
async function open(name, wx, options = {}) {
  global.wx = wx   // miniprogram-simulate merges its own wx under ours when loading
  // one rootPath for every page: the official WXML compiler's output is global per compile
  const id = simulate.load(path.join(MINIPROGRAM, 'pages', name, name), { rootPath: MINIPROGRAM })
  const page = simulate.render(id)
  page.attach(document.createElement('parent-wrapper'))
  await page.instance.onLoad(options)
  await simulate.sleep(0)   // let the view catch up with the data
  return page
}

/** A tap as WeChat delivers it (bindtap fires on touchstart + touchend); the handler runs
 * on a later tick, so await it to see what the tap started. */
async function tap(page, selector) {
  const node = page.querySelector(selector)
  if (!node) throw new Error('no ' + selector + ' on the page')
  node.dispatchEvent('touchstart', { touches: [{ x: 0, y: 0 }], changedTouches: [{ x: 0, y: 0 }] })
  node.dispatchEvent('touchend', { touches: [], changedTouches: [{ x: 0, y: 0 }] })
  await simulate.sleep(0)
}

function text(page, selector) {
  const node = page.querySelector(selector)
  return node ? node.dom.textContent.trim() : null
}

async function until(predicate, what, timeout = 15000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what)
    await simulate.sleep(20)
  }
}

module.exports = { open, tap, text, until, shop, MINIPROGRAM }
