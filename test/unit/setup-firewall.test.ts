import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

/**
 * scripts/setup-firewall.sh: the rules it writes for each machine of docs/deployment.md's firewall
 * table, what it refuses, and — as root, in throwaway network namespaces — that applying is
 * repeatable, removing takes exactly its own rules away, and the rules hold for real connections
 * (the host's ports, a port published by DNAT as Docker does, an established session).
 */
const SCRIPT = join(import.meta.dirname, '..', '..', 'scripts', 'setup-firewall.sh');
const BASH = execFileSync('sh', ['-c', 'command -v bash'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'fieldstream-fw-'));
after(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  code: number | null;
  out: string;
  err: string;
}
/** Runs the script with a clean environment (only PATH and what is given) in `work`. */
function fw(args: string[], o: { env?: Record<string, string>; netns?: string; as?: number } = {}): Run {
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...o.env };
  let cmd = [BASH, SCRIPT, ...args];
  if (o.as !== undefined) cmd = ['setpriv', `--reuid=${o.as}`, `--regid=${o.as}`, '--clear-groups', ...cmd];
  if (o.netns) cmd = ['ip', 'netns', 'exec', o.netns, ...cmd];
  const r = spawnSync(cmd[0]!, cmd.slice(1), { cwd: work, env, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const CORP = '--corp-egress-ip=203.0.113.7,2001:db8::7';
const DMZS = '--dmz-server-ip=198.51.100.10, 198.51.100.11,2001:db8::10';

/** The rules of one nft chain in a dry-run script, comments left out. */
function chain(script: string, name: string): string[] {
  const m = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(script);
  assert.ok(m, `no ${name} chain in:\n${script}`);
  return m[1]!.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

describe('setup-firewall.sh --dry-run', () => {
  it('dmz: 443 from anywhere (80 not: CADDY_TLS defaults to files), 8883 and 9091 from the corporate egress only, the rest dropped', () => {
    const r = fw(['dmz', '--dry-run', CORP]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^table inet fieldstream\ndelete table inet fieldstream\ntable inet fieldstream \{$/m);
    const input = chain(r.out, 'input');
    assert.equal(input[0], 'type filter hook input priority filter; policy drop;');
    assert.equal(input[1], 'ct state established,related accept', 'established before anything that drops');
    assert.ok(!input.includes('tcp dport 80 accept'), 'no ACME challenge port without CADDY_TLS=acme');
    for (const rule of ['iif "lo" accept', 'tcp dport 22 accept', 'tcp dport 443 accept',
      'ip saddr 203.0.113.7 tcp dport { 8883, 9091 } accept', 'ip6 saddr 2001:db8::7 tcp dport { 8883, 9091 } accept']) {
      assert.ok(input.includes(rule), `${rule} in\n${input.join('\n')}`);
    }
    assert.ok(!input.some((l) => /8444/.test(l)), 'the token route is closed unless on');
    assert.match(r.err, /SSH \(22\/tcp\) is open to every address; --ssh-from/);
    const fwd = chain(r.out, 'forward');
    assert.ok(fwd.includes('ip saddr 203.0.113.7 ct status dnat meta l4proto tcp ct original proto-dst 9091 accept'));
    assert.ok(fwd.indexOf('ct status dnat drop') < fwd.indexOf('tcp dport { 80, 443 } accept'), 'what Docker publishes is dropped before anything outbound is accepted');
    // Outbound, the host and its containers: HTTP(S) (Let's Encrypt, packages), DNS, NTP; nothing
    // else, so a DMZ server taken opens no connection into the corporate network.
    const out = chain(r.out, 'output');
    assert.equal(out[0], 'type filter hook output priority filter; policy drop;');
    for (const rule of ['ct state established,related accept', 'oif "lo" accept', 'tcp dport { 80, 443 } accept', 'udp dport 53 accept', 'tcp dport 53 accept', 'udp dport 123 accept']) {
      assert.ok(out.includes(rule), `${rule} in\n${out.join('\n')}`);
    }
    assert.ok(!out.some((l) => /8086|5432|8883/.test(l)), 'no database or broker port out');
    assert.equal(fwd[0], 'type filter hook forward priority filter; policy drop;');
    assert.ok(fwd.includes('tcp dport { 80, 443 } accept') && fwd.includes('udp dport 53 accept'), 'the containers the same');
  });

  it('docs/deployment.md prints what --dry-run prints for the DMZ server, as it says', () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'deployment.md'), 'utf8');
    const m = /for the\nDMZ server with `CORP_EGRESS_IP=203\.0\.113\.7`, `CADDY_TLS=acme` and `--ssh-from 192\.0\.2\.0\/24`:\n\n```\n([\s\S]*?)```\n/.exec(doc);
    assert.ok(m, 'the dry-run example in docs/deployment.md');
    // the nft script: FIREWALL_BACKEND=auto prints it where nft is installed
    const r = fw(['dmz', '--dry-run', '--ssh-from', '192.0.2.0/24', '--backend', 'nft'], { env: { CORP_EGRESS_IP: '203.0.113.7', CADDY_TLS: 'acme' } });
    assert.equal(r.code, 0, r.err);
    assert.equal(m[1], r.out);
  });

  it('dmz: CADDY_TLS=files closes 80, CADDY_TOKEN_ROUTE=on opens CADDY_TOKEN_PORT, from .env or options', () => {
    writeFileSync(join(work, 'dmz.env'), 'CADDY_TLS=files   # our own certificate\nCADDY_TOKEN_ROUTE="on"\nCADDY_TOKEN_PORT=9444\nCORP_EGRESS_IP=192.0.2.0/24\n');
    const r = fw(['dmz', '--dry-run', '--env-file', 'dmz.env', '--ssh-from', '10.9.0.0/16', '--ssh-port', '2222']);
    assert.equal(r.code, 0, r.err);
    const input = chain(r.out, 'input');
    assert.ok(!input.includes('tcp dport 80 accept'));
    assert.ok(input.includes('tcp dport 9444 accept'));
    assert.ok(input.includes('ip saddr 192.0.2.0/24 tcp dport { 8883, 9091 } accept'));
    assert.ok(input.includes('ip saddr 10.9.0.0/16 tcp dport 2222 accept'));
    assert.ok(!input.some((l) => /dport 22 /.test(l)));
    assert.equal(r.err, '', 'no SSH warning with --ssh-from');
    // an option wins over the file
    const o = fw(['dmz', '--dry-run', '--env-file=dmz.env', '--caddy-tls=acme', '--token-route', 'off', '--no-ssh']);
    assert.equal(o.code, 0, o.err);
    assert.ok(chain(o.out, 'input').includes('tcp dport 80 accept'));
    assert.ok(!chain(o.out, 'input').some((l) => /9444|dport 22/.test(l)));
  });

  it('internal: 8883 and 9091 out to the DMZ servers only, operator ports from OPERATOR_NET only when given', () => {
    const r = fw(['internal', '--dry-run', DMZS, '--operator-net', '10.20.0.0/16']);
    assert.equal(r.code, 0, r.err);
    const out = chain(r.out, 'output');
    assert.equal(out[0], 'type filter hook output priority filter; policy accept;', 'the rest of outbound untouched');
    const allowed = out.indexOf('ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport { 8883, 9091 } accept');
    assert.ok(allowed > 0 && out.includes('ip6 daddr 2001:db8::10 tcp dport { 8883, 9091 } accept'), out.join('\n'));
    assert.ok(out.indexOf('tcp dport { 8883, 9091 } drop') > allowed);
    // the internal broker listens on 8883 as well: its clients on this machine reach it over loopback
    assert.ok(out.indexOf('oif "lo" accept') > 0 && out.indexOf('oif "lo" accept') < allowed, out.join('\n'));
    assert.ok(chain(r.out, 'forward').includes('tcp dport { 8883, 9091 } drop'), 'containers too');
    assert.ok(chain(r.out, 'input').includes('ip saddr 10.20.0.0/16 tcp dport { 8080, 8090, 3000, 9090 } accept'));
    const closed = fw(['internal', '--dry-run', DMZS]);
    assert.equal(closed.code, 0, closed.err);
    assert.ok(!chain(closed.out, 'input').some((l) => /8080/.test(l)));
  });

  it('internal: a port that an entry of DMZ_BROKER_HOSTS or DMZ_PROMETHEUS_HOSTS names is narrowed to the DMZ servers too', () => {
    // One DMZ server per entry, each may name its own port; only the settings' ports were narrowed,
    // the others left open to any address.
    writeFileSync(join(work, 'internal-multi.env'), 'DMZ_BROKER_HOSTS=dmz1.example.org:8883, dmz2.example.org:8884\nDMZ_PROMETHEUS_HOSTS=dmz1.example.org,dmz2.example.org:9092\n');
    const r = fw(['internal', '--dry-run', DMZS, '--env-file', 'internal-multi.env']);
    assert.equal(r.code, 0, r.err);
    const out = chain(r.out, 'output');
    const allowed = out.indexOf('ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport { 8883, 8884, 9091, 9092 } accept');
    assert.ok(allowed > 0, out.join('\n'));
    assert.ok(out.indexOf('tcp dport { 8883, 8884, 9091, 9092 } drop') > allowed, out.join('\n'));
    writeFileSync(join(work, 'internal-bad.env'), 'DMZ_BROKER_HOSTS=dmz1.example.org:88830\n');
    const bad = fw(['internal', '--dry-run', DMZS, '--env-file', 'internal-bad.env']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /DMZ_BROKER_HOSTS: 'dmz1.example.org:88830' has a bad port/);
  });

  it('field: nothing in; out only the gateway port to the DMZ servers, DNS and NTP', () => {
    writeFileSync(join(work, 'field.env'), 'GATEWAY_URL=wss://fieldstream.example.org:8444/ws\nGATEWAY_PORT=8443\n');
    const r = fw(['field', '--dry-run', DMZS, '--env-file', 'field.env', '--no-ssh']);
    assert.equal(r.code, 0, r.err);
    const input = chain(r.out, 'input');
    assert.deepEqual(input.filter((l) => /dport/.test(l)), [], 'no port open inbound');
    const out = chain(r.out, 'output');
    assert.equal(out[0], 'type filter hook output priority filter; policy drop;');
    for (const rule of ['ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport 8444 accept', 'ip6 daddr 2001:db8::10 tcp dport 8444 accept',
      'udp dport 53 accept', 'tcp dport 53 accept', 'udp dport 123 accept']) {
      assert.ok(out.includes(rule), `${rule} in\n${out.join('\n')}`);
    }
    assert.equal(chain(r.out, 'forward')[0], 'type filter hook forward priority filter; policy drop;');
    const plain = fw(['field', '--dry-run', '--dmz-server-ip', '198.51.100.10', '--gateway-port', '443']);
    assert.ok(chain(plain.out, 'output').includes('ip daddr 198.51.100.10 tcp dport 443 accept'));
  });

  it("docs/deployment.md's command for a field device opens the port its bundle's GATEWAY_URL names (a token device's 8444)", () => {
    // A device holds no checkout with a .env: its settings are the bundle's .env (docs/deployment.md,
    // "4. Field devices"). The command as printed read the .env of the folder it ran in, found no
    // GATEWAY_URL there and opened 443 only: a token device, on 8444, could then reach no gateway.
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'deployment.md'), 'utf8');
    const line = /^sudo \.\/scripts\/setup-firewall\.sh (field .*?)\s*(?:#.*)?$/m.exec(doc);
    assert.ok(line, 'the field line of the firewall commands');
    const bundle = join(work, 'opt-fieldstream', 'plc-3');
    mkdirSync(bundle, { recursive: true });
    writeFileSync(join(bundle, '.env'), 'DEVICE_ID=plc-3\nGATEWAY_URL=wss://fieldstream.example.org:8444/ws\nFIELD_TOKEN_FILE=/certs/device.token\n');
    // The device of docs/deployment.md's steps: its bundle unpacked in /opt/fieldstream/DEVICE.
    const args = line[1]!.replaceAll('/opt/fieldstream/pump-station-7', bundle).split(/\s+/);
    const r = fw([...args, '--dry-run']);
    assert.equal(r.code, 0, r.err);
    assert.ok(chain(r.out, 'output').includes('ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport 8444 accept'), `${line[0]}\n${r.out}`);
  });

  it('field: with several GATEWAY_URLs, out to the port of each (443 where one names none), so the device can fail over', () => {
    // docs/deployment.md: several URLs are tried in turn. Only the first URL's port was opened, so
    // a device whose servers listen on different ports (a token route on 8444, a server on 443)
    // could reach none but the first: the failover the URLs are for never got through.
    writeFileSync(join(work, 'field-multi.env'), 'GATEWAY_URL=wss://dmz1.example.org:8444/ws, wss://dmz2.example.org/ws,wss://[2001:db8::10]:8445/ws\n');
    const r = fw(['field', '--dry-run', DMZS, '--env-file', 'field-multi.env', '--no-ssh']);
    assert.equal(r.code, 0, r.err);
    const out = chain(r.out, 'output');
    assert.ok(out.includes('ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport { 8444, 443, 8445 } accept'), out.join('\n'));
    const ipt = fw(['field', '--dry-run', DMZS, '--env-file', 'field-multi.env', '--no-ssh'], { env: { FIREWALL_BACKEND: 'iptables' } });
    assert.ok(ipt.out.split('\n').includes('iptables -w -A FIELDSTREAM-OUT -p tcp -d 198.51.100.10,198.51.100.11 -m multiport --dports 8444,443,8445 -j RETURN'), ipt.out);
    // --gateway-port still says the one port.
    const one = fw(['field', '--dry-run', DMZS, '--env-file', 'field-multi.env', '--no-ssh', '--gateway-port', '9443']);
    assert.ok(chain(one.out, 'output').includes('ip daddr { 198.51.100.10, 198.51.100.11 } tcp dport 9443 accept'), one.out);
  });

  it('iptables: our own chains, flushed and refilled, jumped to once, dropping the rest last', () => {
    const r = fw(['internal', '--dry-run', DMZS, '--operator-net=10.20.0.0/16'], { env: { FIREWALL_BACKEND: 'iptables' } });
    assert.equal(r.code, 0, r.err);
    const lines = r.out.split('\n');
    for (const l of ['iptables -w -N FIELDSTREAM-IN 2>/dev/null || true', 'iptables -w -F FIELDSTREAM-IN',
      'iptables -w -A FIELDSTREAM-OUT -p tcp -d 198.51.100.10,198.51.100.11 -m multiport --dports 8883,9091 -j RETURN',
      'ip6tables -w -A FIELDSTREAM-OUT -p tcp -d 2001:db8::10 -m multiport --dports 8883,9091 -j RETURN',
      'iptables -w -A FIELDSTREAM-OUT -p tcp -m multiport --dports 8883,9091 -j DROP',
      'iptables -w -A FIELDSTREAM-IN -p tcp -s 10.20.0.0/16 -m multiport --dports 8080,8090,3000,9090 -j RETURN',
      'iptables -w -A FIELDSTREAM-IN -j DROP',
      'iptables -w -C INPUT -j FIELDSTREAM-IN 2>/dev/null || iptables -w -I INPUT 1 -j FIELDSTREAM-IN']) {
      assert.ok(lines.includes(l), `${l} in\n${r.out}`);
    }
    assert.ok(lines.indexOf('iptables -w -A FIELDSTREAM-IN -j DROP') > lines.indexOf('iptables -w -A FIELDSTREAM-IN -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN'));
    assert.ok(!lines.includes('iptables -w -A FIELDSTREAM-OUT -j DROP'), 'internal outbound is not default-deny');
    assert.doesNotMatch(r.out, /^iptables -w .*2001:/m, 'IPv6 addresses only in ip6tables');
  });

  it('reads .env as data: a command in a value is never run', () => {
    const marker = join(work, 'ran');
    writeFileSync(join(work, '.env'), `PWNED=$(touch ${marker})\n\`touch ${marker}\`\nexport CORP_EGRESS_IP='203.0.113.99'\n`);
    try {
      const r = fw(['dmz', '--dry-run']);
      assert.equal(r.code, 0, r.err);
      assert.ok(chain(r.out, 'input').includes('ip saddr 203.0.113.99 tcp dport { 8883, 9091 } accept'));
      assert.equal(existsSync(marker), false);
    } finally {
      rmSync(join(work, '.env'));
    }
  });
});

describe('setup-firewall.sh refusals', () => {
  it('a required address missing: exit 2, naming it, instead of opening the port to everyone', () => {
    for (const [role, name] of [['dmz', 'CORP_EGRESS_IP'], ['internal', 'DMZ_SERVER_IP'], ['field', 'DMZ_SERVER_IP']] as const) {
      const r = fw([role, '--dry-run']);
      assert.equal(r.code, 2, role);
      assert.match(r.err, new RegExp(`${name} is not set .*refusing to open the port to everyone`), role);
      assert.equal(r.out, '');
      assert.equal(fw([role, '--dry-run', `--${name.toLowerCase().replaceAll('_', '-')}`, ' , ']).code, 2, `${role}: an empty list`);
    }
  });

  it('anything but IPv4/IPv6 addresses and CIDRs: exit 2 with the bad entry named', () => {
    for (const bad of ['10.0.0.300', 'fieldstream.example.org', '10.0.0.1/33', '0.0.0.0/0', '::/0', '1:2:3', '2001:db8:::1',
      '2001:db8::1::2', '10.0.0.1;reboot', '198.51.100.10,$(id)', '10.0.0.0/8/8', '1:2:3:4:5:6:7:8:9', '10.0.0.1/x']) {
      const r = fw(['internal', '--dry-run', '--dmz-server-ip', bad]);
      assert.equal(r.code, 2, bad);
      assert.match(r.err, /^setup-firewall: DMZ_SERVER_IP: '.*' (is not an IPv4\/IPv6 address or CIDR|has a bad prefix length|means every address)/, `${bad}: ${r.err}`);
      assert.equal(r.out, '', bad);
    }
    for (const good of ['10.0.0.1', '10.0.0.0/8', '::1', 'fe80::1/64', '2001:db8:0:0:0:0:0:1', '::ffff:a00:1']) {
      assert.equal(fw(['internal', '--dry-run', '--dmz-server-ip', good]).code, 0, good);
    }
  });

  it('usage errors exit 2, a missing tool 3, applying without root 4', () => {
    for (const args of [[], ['dmz', 'field'], ['dmz', '--bogus'], ['dmz', '--dry-run', '--remove'], ['dmz', '--corp-egress-ip'],
      ['field', '--dry-run', '--dmz-server-ip=10.0.0.1', '--ssh-port', '70000'], ['dmz', '--dry-run', CORP, '--caddy-tls', 'maybe'],
      ['dmz', '--dry-run', CORP, '--env-file', 'missing.env']]) {
      const r = fw(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, /^setup-firewall: /);
    }
    assert.equal(fw(['dmz', '--dry-run', CORP], { env: { FIREWALL_BACKEND: 'ufw' } }).code, 2);
    const empty = mkdtempSync(join(work, 'path-'));
    const none = fw(['dmz', '--dry-run', CORP], { env: { PATH: empty } });
    assert.equal(none.code, 3, none.err);
    assert.match(none.err, /neither nft \(nftables\) nor iptables is installed/);
    // Not root: refused before anything is touched (as root, the test drops to nobody for this).
    const notRoot = process.getuid?.() === 0 ? { as: 65534 } : {};
    const r = fw(['dmz', CORP], notRoot);
    assert.equal(r.code, 4, r.err);
    assert.match(r.err, /needs root/);
    assert.equal(fw(['--remove'], notRoot).code, 4);
  });
});

/** Why this machine cannot run the namespace tests, or undefined. */
function nsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (ip netns add, nft, iptables)';
  const probe = `fs-fw-${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch (err) {
    return `ip netns is not available here: ${(err as Error).message.split('\n')[0]}`;
  }
  for (const tool of ['nft', 'iptables', 'ip6tables', 'iptables-save']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  return undefined;
}
const why = nsUnavailable();
const namespaces: string[] = [];
const children: ChildProcess[] = [];
function netns(): string {
  const name = `fs-fw-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  namespaces.push(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}
const inNs = (ns: string, ...cmd: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8' });
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
});

describe('setup-firewall.sh applied, in a throwaway network namespace', () => {
  it('nft: applies, applies again to the same ruleset, removes only its own table', (t) => {
    if (why) return t.skip(why);
    const ns = netns();
    inNs(ns, 'nft', 'add table inet other');
    for (const role of ['dmz', 'internal', 'field']) {
      const a = fw([role, CORP, DMZS], { netns: ns });
      assert.equal(a.code, 0, a.err);
      const first = inNs(ns, 'nft', 'list', 'ruleset');
      assert.match(inNs(ns, 'nft', 'list', 'table', 'inet', 'fieldstream'), /policy drop/);
      assert.equal(fw([role, CORP, DMZS], { netns: ns }).code, 0);
      assert.equal(inNs(ns, 'nft', 'list', 'ruleset'), first, `${role}: a second run changes nothing`);
    }
    assert.match(inNs(ns, 'nft', 'list', 'table', 'inet', 'fieldstream'), /policy drop;[\s\S]*chain output \{\n\s*type filter hook output priority filter; policy drop;/, 'the last run (field) replaced the table');
    const r = fw(['--remove'], { netns: ns });
    assert.equal(r.code, 0, r.err);
    assert.equal(inNs(ns, 'nft', 'list', 'tables').trim(), 'table inet other', 'only our table went');
    assert.equal(fw(['field', '--remove'], { netns: ns }).code, 0, 'removing twice is fine');
  });

  it('iptables (FIREWALL_BACKEND=iptables): applies, applies again to the same rules, removes its chains', (t) => {
    if (why) return t.skip(why);
    const ns = netns();
    const env = { FIREWALL_BACKEND: 'iptables' };
    const save = () => inNs(ns, 'iptables-save').replace(/^#.*\n/gm, '') + inNs(ns, 'ip6tables-save').replace(/^#.*\n/gm, '');
    for (const role of ['field', 'dmz']) {
      const a = fw([role, CORP, DMZS], { netns: ns, env });
      assert.equal(a.code, 0, a.err);
      const first = save();
      assert.equal(fw([role, CORP, DMZS], { netns: ns, env }).code, 0);
      assert.equal(save(), first, `${role}: a second run changes nothing`);
    }
    const rules = save();
    assert.equal(rules.match(/^-A INPUT -j FIELDSTREAM-IN$/gm)?.length, 2, 'one jump per family');
    assert.match(rules, /^-A FIELDSTREAM-IN -s 203\.0\.113\.7\/32 -p tcp -m multiport --dports 8883,9091 -j RETURN$/m);
    assert.match(rules, /^-A FIELDSTREAM-IN -s 2001:db8::7\/128 -p tcp -m multiport --dports 8883,9091 -j RETURN$/m);
    assert.doesNotMatch(rules, /^-A FIELDSTREAM-OUT -d 198\.51\.100/m, 'the field run\'s outbound rules went when dmz replaced them');
    assert.match(rules, /^-A FIELDSTREAM-OUT -p tcp -m multiport --dports 80,443 -j RETURN$/m, "the dmz run's own");
    assert.equal(fw(['--remove'], { netns: ns, env }).code, 0);
    assert.doesNotMatch(save(), /FIELDSTREAM/);
  });

  describe('real connections: a DMZ server with a published port, a client with two addresses', () => {
    // client (10.66.0.2 and the "corporate egress" 10.66.0.3) ── dmz host 10.66.0.1 ── container 10.67.0.2,
    // on the host's side of its veth a name as Docker gives its bridges (br-...), which the client may route to
    let host = '';
    let client = '';
    before(async () => {
      if (why) return;
      host = netns();
      client = netns();
      const box = netns();
      execFileSync('ip', ['link', 'add', 'fsc0', 'netns', client, 'type', 'veth', 'peer', 'name', 'fsh0', 'netns', host]);
      execFileSync('ip', ['link', 'add', 'fsk0', 'netns', box, 'type', 'veth', 'peer', 'name', 'br-fs0', 'netns', host]);
      for (const [ns, dev, addrs] of [[client, 'fsc0', ['10.66.0.2/24', '10.66.0.3/24']], [host, 'fsh0', ['10.66.0.1/24']],
        [host, 'br-fs0', ['10.67.0.1/24']], [box, 'fsk0', ['10.67.0.2/24']]] as const) {
        for (const a of addrs) execFileSync('ip', ['-n', ns, 'addr', 'add', a, 'dev', dev]);
        execFileSync('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      }
      execFileSync('ip', ['-n', box, 'route', 'add', 'default', 'via', '10.67.0.1']);
      // A neighbour of the host's network may route to the containers' through it, as to any router.
      execFileSync('ip', ['-n', client, 'route', 'add', '10.67.0.0/24', 'via', '10.66.0.1']);
      inNs(host, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
      // Docker's way of publishing a port: DNAT 9091 on the host to the container's 9090.
      inNs(host, 'nft', 'add table ip docker; add chain ip docker pre { type nat hook prerouting priority dstnat; }; add rule ip docker pre tcp dport 9091 dnat to 10.67.0.2:9090');
      await Promise.all([echo(host, [22, 443, 8883, 5555]), echo(box, [9090])]);
    });

    /** A TCP echo server in a namespace; resolves once it listens. */
    function echo(ns: string, ports: number[]): Promise<void> {
      const code = `const net=require('node:net');let n=0;for(const p of ${JSON.stringify(ports)})net.createServer(s=>s.pipe(s)).listen(p,'0.0.0.0',()=>{if(++n===${ports.length})console.log('ready')})`;
      const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(c);
      return new Promise((resolve, reject) => {
        c.stdout.once('data', () => resolve());
        c.once('exit', (code) => reject(new Error(`echo server exited ${code}`)));
      });
    }
    /** open: an echo came back; dropped: no answer at all within 1.5 s (a drop, not a refusal). */
    function probe(from: string, port: number, to = '10.66.0.1'): 'open' | 'dropped' | string {
      const code = `const s=require('node:net').connect({host:'${to}',port:${port},localAddress:'${from}'});s.setTimeout(1500,()=>{console.log('dropped');process.exit()});s.on('connect',()=>s.write('x'));s.on('data',()=>{console.log('open');process.exit()});s.on('error',e=>{console.log(e.code);process.exit()})`;
      return inNs(client, process.execPath, '-e', code).trim();
    }

    it('dmz: 443 from anywhere; 8883 and the published 9091 only from the corporate egress; others dropped; an open session survives', async (t) => {
      if (why) return t.skip(why);
      assert.equal(probe('10.66.0.2', 9091), 'open', 'the lab works before the firewall');
      // An SSH-like session open before the firewall comes up, with new SSH connections then closed.
      const session = spawn('ip', ['netns', 'exec', client, process.execPath, '-e',
        `const s=require('node:net').connect(22,'10.66.0.1',()=>console.log('connected'));process.stdin.pipe(s);s.pipe(process.stdout)`], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.push(session);
      let seen = '';
      session.stdout!.on('data', (d: Buffer) => (seen += d.toString()));
      const waitFor = async (text: string) => { for (let i = 0; i < 100 && !seen.includes(text); i++) await new Promise((r) => setTimeout(r, 50)); };
      await waitFor('connected');
      assert.match(seen, /connected/);

      const r = fw(['dmz', '--corp-egress-ip=10.66.0.3', '--no-ssh', '--caddy-tls=files'], { netns: host });
      assert.equal(r.code, 0, r.err);
      session.stdin!.write('still here\n');
      await waitFor('still here');
      assert.match(seen, /still here/, 'the established session was not cut');
      assert.equal(probe('10.66.0.2', 22), 'dropped', 'new SSH connections: --no-ssh');
      assert.equal(probe('10.66.0.2', 443), 'open');
      assert.equal(probe('10.66.0.2', 5555), 'dropped');
      assert.equal(probe('10.66.0.2', 8883), 'dropped');
      assert.equal(probe('10.66.0.2', 9091), 'dropped', 'a Docker-published port is filtered too');
      assert.equal(probe('10.66.0.3', 8883), 'open');
      assert.equal(probe('10.66.0.3', 9091), 'open');
      assert.equal(fw(['--remove'], { netns: host }).code, 0);
      assert.equal(probe('10.66.0.2', 9091), 'open', 'removed: as before');
    });

    it('internal: no new connection from the DMZ server, SSH open to everyone else included', (t) => {
      if (why) return t.skip(why);
      // The internal side dials the DMZ; a DMZ server taken must not reach the internal one's SSH,
      // which stays open to every other address by default (a warning says so).
      const r = fw(['internal', '--dmz-server-ip=10.66.0.2'], { netns: host });
      assert.equal(r.code, 0, r.err);
      assert.equal(probe('10.66.0.2', 22), 'dropped', 'SSH from the DMZ server');
      assert.equal(probe('10.66.0.3', 22), 'open', 'SSH from elsewhere');
      assert.equal(fw(['--remove'], { netns: host }).code, 0);
    });

    it('dmz and internal: a container is reached through the ports Docker publishes only, never routed to directly', (t) => {
      if (why) return t.skip(why);
      assert.equal(probe('10.66.0.2', 9090, '10.67.0.2'), 'open', 'the lab routes to the container before the firewall');
      // Docker accepts a packet routed to a container's published port (its DOCKER chain), whatever
      // address the port was published on: only the host's own rules can refuse it.
      let r = fw(['dmz', '--corp-egress-ip=10.66.0.3', '--no-ssh'], { netns: host });
      assert.equal(r.code, 0, r.err);
      assert.equal(probe('10.66.0.2', 9090, '10.67.0.2'), 'dropped', 'dmz: from anywhere');
      assert.equal(probe('10.66.0.3', 9090, '10.67.0.2'), 'dropped', 'dmz: from the corporate egress too, whose port is the published one');
      assert.equal(probe('10.66.0.3', 9091), 'open', 'dmz: the published port still');
      // The internal server, with the client as its DMZ server: nothing comes in from the DMZ.
      r = fw(['internal', '--dmz-server-ip=10.66.0.2', '--no-ssh'], { netns: host });
      assert.equal(r.code, 0, r.err);
      assert.equal(probe('10.66.0.2', 9090, '10.67.0.2'), 'dropped', 'internal: from the DMZ server');
      assert.equal(probe('10.66.0.2', 9091), 'dropped', 'internal: nor through a published port');
      assert.equal(fw(['--remove'], { netns: host }).code, 0);
      assert.equal(probe('10.66.0.2', 9090, '10.67.0.2'), 'open', 'removed: as before');
    });
  });
});
