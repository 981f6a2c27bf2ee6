#!/usr/bin/env python3
# Writes the seed corpora fuzz/corpus/<target>/ from the provider vectors of
# tests/fixtures/schemes/, config/hookgate.yaml and hand-picked tricky cases (needs PyYAML).
# Run from anywhere: python3 fuzz/make_seeds.py
import yaml, os, json
import pathlib
root = str(pathlib.Path(__file__).resolve().parent.parent)
fx = root + '/tests/fixtures/schemes/'
out = root + '/fuzz/corpus/'
def w(target, name, data):
    d = out + target
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(f'{d}/{name}', 'wb').write(data)

# signature_headers: scheme, now, signature, timestamp, id, extra, body
def sig(name, scheme, now, s, ts, i, body, extra=''):
    w('signature_headers', name, '\n'.join([scheme, str(now or ''), s, ts, i, extra]) + '\n' + body)

m = {
 'hmac-sha256': ('hmac-sha256', 'X-Webhook-Signature', None, None),
 'github': ('github', 'X-Hub-Signature-256', None, 'X-GitHub-Delivery'),
 'shopify': ('shopify', 'X-Shopify-Hmac-Sha256', None, 'X-Shopify-Webhook-Id'),
 'slack': ('slack', 'X-Slack-Signature', 'X-Slack-Request-Timestamp', None),
 'hmac-sha512-hex': ('hmac-sha512', 'X-Signature', None, None),
 'hmac-template': ('hmac-template', 'X-Signature', 'X-Timestamp', 'X-Request-Id'),
 'stripe': ('stripe', 'Stripe-Signature', None, None),
}
for f, (scheme, sh, th, ih) in m.items():
    doc = yaml.safe_load(open(fx + f + '.yaml'))
    for n, v in enumerate(doc['vectors']):
        hd = v['headers']
        sig(f'{f}-{n}', scheme, v.get('now'), hd[sh], hd.get(th, '') if th else '', hd.get(ih, '') if ih else '', v['body'])
doc = yaml.safe_load(open(fx + 'standard-webhooks.yaml'))
for n, v in enumerate(doc['vectors']):
    hd = v['headers']
    if 'svix-signature' in hd:
        sig(f'svix-{n}', 'svix', v['now'], hd['svix-signature'], hd['svix-timestamp'], hd['svix-id'], v['body'])
    else:
        sig(f'standard-webhooks-{n}', 'standard-webhooks', v['now'], hd['webhook-signature'], hd['webhook-timestamp'], hd['webhook-id'], v['body'])
# tricky ones
sig('sw-bare-v1', 'standard-webhooks', 1614265330, 'v1, v1,', '1614265330', 'msg_p5jXN8AQM9LWM0D4loKWxJek', '{"test": 2432232314}')
sig('sw-mixed-family', 'svix', 1614265330, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=', '1614265330', 'msg_p5jXN8AQM9LWM0D4loKWxJek', '{"test": 2432232314}', 'webhook-id:msg_p5jXN8AQM9LWM0D4loKWxJek\x1ewebhook-timestamp:1614265330')
sig('stripe-two-t', 'stripe', 1533204720, 't=1533204620,t=1533204621,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7', '', '', '{}')
sig('stripe-v0-only', 'stripe', 1533204720, 't=1533204620, v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef ,', '', '', '{}')
sig('repeated-sig', 'github', None, 'sha256=00\x1fsha256=11', '', 'x', 'Hello')
sig('sha1-legacy', 'hmac-sha1', None, 'sha1=' + '0'*40, '', '', 'payload')
sig('slack-neg-ts', 'slack', 1531420618, 'v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503', '-1531420618', '', 'x')
sig('spec-upper-pad', 'hmac-sha256', None, ' EsPObY4OCUPgQZ4iQ9H79hW2/thz1W4gQayWO3d4lN0 ', '', 'id', '{}')

# timestamps: now, tolerance, stamp, rfc3339
def ts(name, now, tol, stamp, rfc):
    w('timestamps', name, f'{now}\n{tol}\n{stamp}\n{rfc}')
ts('plain', 1700000000, 300, '1700000000', '2024-01-15T10:30:00Z')
ts('boundary-past', 1700000300, 300, '1700000000', '2024-01-15T11:30:00.250+01:00')
ts('boundary-future', 1699999700, 300, '1700000000', '2024-01-15t10:30:00.123456789123z')
ts('just-stale', 1700000301, 300, '1700000000', '1990-12-31T23:59:60Z')
ts('leading-zeros', 1700000000, 300, '0001700000000', '2024-02-29 00:00:00-23:59')
ts('overflow', 1700000000, 18446744073709551615, '18446744073709551616', '2023-02-29T00:00:00Z')
ts('max', 10000000000, 18446744073709551615, '18446744073709551615', '9999-12-31T23:59:59.999999999+00:00')
ts('sign', 1700000000, 300, '+1700000000', '0000-01-01T00:00:00-00:00')
ts('fraction', 1700000000, 300, '1700000000.5', '2024-01-15T10:30:00')
ts('spaces', 1700000000, 0, ' 1700000000\t', '2024-01-15T10:30:00.Z')
ts('fullwidth', 1700000000, 300, '１７', '２０２４-01-15T10:30:00Z')
ts('zero', 0, 0, '0', '1970-01-01T00:00:00Z')

# delivery_ids: pointer, id header, event header, body
def di(name, ptr, idh, ev, body):
    w('delivery_ids', name, f'{ptr}\n{idh}\n{ev}\n{body}')
di('spec-sample', '/data/id', 'delivery-1', '', '{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345}}')
sb = yaml.safe_load(open(fx + 'stripe.yaml'))['vectors'][0]['body']
di('stripe-event', '/request/idempotency_key', '', '', sb)
di('pointer-escapes', '/a~1b/m~0n/0', 'x\x1fy', 'push', '{"a/b":{"m~n":["first"]},"timestamp":"2024-01-15T10:29:00Z"}')
di('array-index', '/items/01', '', 'message.received', '{"items":["a","b"],"event":null}')
di('number-id', '/id', 'msg_1', '', '{"id":-1.5e3,"timestamp":"2024-01-15T10:30:30Z"}')
di('escaped', '/id', ' padded ', 'dossier.created', '{"id":"evt_\\u0031","event":"message.\\u0072eceived","timestamp":"2024-01-15T10:30:00\\u005a"}')
di('repeated-keys', '/id', '', '', '{"id":"a","id":"b","timestamp":"2024-01-15T10:30:00Z","timestamp":"1999-01-01T00:00:00Z"}')
di('not-json', '', '', 'dossier.created', 'token=abc&event=dossier.created')
di('empty', '', '', '', '')
di('array-body', '/0', '', '', '["message.received"]')
di('array-timestamp', '', '', 'push', '["2024-01-15T10:29:30Z"]')
di('lone-surrogate', '/id', '', '', '{"id":"evt_1","event":"message.received","x":"\\ud800"}')
di('stale', '/id', 'd', '', '{"timestamp":"2024-01-15T10:00:00Z","event":"dossier.created"}')

# framing: version byte, header lines, empty line, raw head
def fr(name, data):
    w('framing', name, data)
fr('cl-te', '\x00Transfer-Encoding:chunked\n\nPOST / HTTP/1.1\r\ncontent-LENGTH: 5\r\nTransfer-Encoding: chunked\r\n\r\n')
fr('chunked', '\x00Transfer-Encoding: Chunked \n\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n')
fr('http10', '\x01Transfer-Encoding:chunked\n\n')
fr('gzip-chunked', '\x00Transfer-Encoding:gzip, chunked\nContent-Length:3\n\n')
fr('two-te', '\x00Transfer-Encoding:chunked\nTransfer-Encoding:chunked\n\n')
fr('empty-cl-bare-lf', '\x00Transfer-Encoding:chunked\n\nPOST / HTTP/1.1\nTransfer-Encoding: chunked\ncontent-length:')
fr('plain', '\x00Content-Length:3\n\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n')

# config_loader
import shutil
os.makedirs(out + 'config_loader', exist_ok=True)
shutil.copy(root + '/config/hookgate.yaml', out + 'config_loader/hookgate.yaml')
for f in os.listdir(fx):
    if not f.endswith('.yaml'): continue
    doc = yaml.safe_load(open(fx + f))
    cfg = {'routes': [{'name': 'r', 'path': '/hooks/*', 'upstream': 'http://127.0.0.1:3000', 'verify': doc['verify'],
            'dedup': {'body_hash': True, 'ttl': '1h'}}]}
    w('config_loader', 'scheme-' + f, yaml.safe_dump(cfg, sort_keys=False))
w('config_loader', 'env', '''listen: ${ADDR}
admin_listen: ${UNSET_ADMIN:-127.0.0.1:9091}
unverified_per_ip: 600
state:
  backend: redis
  redis_url: ${REDIS}
  key_secret: ${STATE_KEY}
  on_error: fail_open
routes:
  - name: a
    path: /a
    upstream: ${UPSTREAM}
    tier: pro
    rate_limit_key: header:X-Tenant-Id
    verify:
      scheme: standard-webhooks
      secrets: [${SECRET}, "$${literal}", "${YAML}"]
    dedup: { missing: forward }
    replay: { max_age: 5m, max_skew: 30s }
    events:
      allow: [dossier.created, message.received]
      routes:
        - match: [message.received]
          upstream: http://localhost:3001
      validate: true
''')
w('config_loader', 'errors', '''routes:
  - name: a
    path: /a
    upstream: http://[::1]:0
    verfy: {}
  - name: a
    path: /a/../b
    upstream: ${UNSET_X}
    verify: { secrets: [], secrets: [x] }
    tier: gold
''')
w('config_loader', 'cr-line-breaks', 'routes:\r  - name: a\r    name: b\r')
w('config_loader', 'anchors', '''x: &a [*a]
routes: &r
  - &route { name: a, path: /a, upstream: "http://127.0.0.1:1", verify: { secrets: [k] } }
  - <<: *route
    name: b
''')
