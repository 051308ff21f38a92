// Real run_simulator.py / run_server.py processes for the Mini Program tests.
'use strict'
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..', '..', '..')
// the demo app and merchant, written once: simulator/demo.json
const demo = require(path.join(ROOT, 'simulator', 'demo.json'))
const DEMO = { appid: demo.appid, appSecret: demo.app_secret, mchId: demo.mch_id, apiKey: demo.api_key }

function python() {
  if (process.env.PYTHON) return process.env.PYTHON
  const venv = path.join(ROOT, '.venv', 'bin', 'python')
  return fs.existsSync(venv) ? venv : 'python3'
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/** A child process; its output is kept for the failure message. */
async function start(script, args, env) {
  const port = Number(args[args.indexOf('--port') + 1])
  const child = spawn(python(), [path.join(ROOT, script), ...args], {
    cwd: ROOT, env: Object.assign({}, process.env, { PYTHONUNBUFFERED: '1' }, env || {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const deadline = Date.now() + 20000
  while (!(await portOpen(port))) {
    if (child.exitCode !== null) throw new Error(script + ' exited ' + child.exitCode + ':\n' + output)
    if (Date.now() > deadline) throw new Error(script + ' did not listen on ' + port + ':\n' + output)
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    url: 'http://127.0.0.1:' + port,
    output: () => output,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve()
      child.once('exit', resolve)
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 5000).unref()
    }),
  }
}

/** The backend's WeChat Pay v3 settings from the simulator's manifest DIR/v3.json (README). */
function v3Env(manifest) {
  return {
    WECHAT_PAY_VERSION: 'v3', WECHAT_APIV3_KEY: manifest.apiv3_key,
    WECHAT_MCH_PRIVATE_KEY_FILE: manifest.merchant_private_key_file, WECHAT_MCH_SERIAL_NO: manifest.merchant_serial_no,
    WECHAT_PAY_PUBLIC_KEY_FILE: manifest.wechatpay_public_key_file, WECHAT_PAY_PUBLIC_KEY_ID: manifest.wechatpay_public_key_id,
  }
}

/**
 * A simulator and a backend wired together, on fresh ports and a fresh database.
 * options.signType: the backend's WECHAT_SIGN_TYPE; options.acceptUnknownCodes: the
 * simulator's developer mode; options.payVersion 'v3': the backend speaks WeChat Pay v3,
 * configured from the simulator's manifest (public-key mode).
 */
async function startShop(options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-shop-'))
  const simPort = await freePort()
  const simArgs = ['--port', String(simPort), '--time-scale', '0.01', '--v3-dir', path.join(dir, 'sim-v3')]
  if (options.acceptUnknownCodes) simArgs.push('--accept-unknown-codes')
  const sim = await start('run_simulator.py', simArgs)
  const port = await freePort()
  const v3 = options.payVersion === 'v3'
  let backend
  try {
    const manifest = v3 ? JSON.parse(fs.readFileSync(path.join(dir, 'sim-v3', 'v3.json'), 'utf8')) : null
    backend = await start('run_server.py', ['--port', String(port)], Object.assign({
      WECHAT_APPID: DEMO.appid, WECHAT_APP_SECRET: DEMO.appSecret, WECHAT_MCH_ID: DEMO.mchId,
      WECHAT_API_KEY: DEMO.apiKey,
      WECHAT_NOTIFY_URL: 'http://127.0.0.1:' + port + (v3 ? '/wechat/pay/v3/notify' : '/wechat/pay/notify'),
      WECHAT_LOGIN_BASE_URL: sim.url, WECHAT_PAY_BASE_URL: sim.url, WECHAT_TIMEOUT: '5',
      WECHAT_SIGN_TYPE: options.signType || 'MD5', DATABASE_URL: 'sqlite:///' + path.join(dir, 'shop.db'),
      SWEEP_INTERVAL: '0', LOG_LEVEL: 'WARNING',
    }, v3 ? v3Env(manifest) : {}))
  } catch (error) {
    await sim.stop()
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
  return {
    sim, backend,
    async stop() {
      await backend.stop()
      await sim.stop()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

module.exports = { startShop, freePort, DEMO, ROOT }
