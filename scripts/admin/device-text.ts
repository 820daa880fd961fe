import { DAY_MS } from '../../shared/limits.ts';
import { columns } from './columns.ts';
import type { DeviceSummary } from './devices.ts';

/** How fieldstream-admin shows devices: `devices list` as a table, `devices show` in detail. */

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** Whole days until an ISO date (negative once past), as a certificate's daysLeft. */
const daysUntil = (iso: string, now = Date.now()) => Math.floor((Date.parse(iso) - now) / DAY_MS);

/** The EXPIRES column: the certificate's notAfter, or the token's expiresAt ("never": a token from before expiry dates). */
function expiryText(d: DeviceSummary): string {
  if (d.auth === 'certificate') return d.expiresAt === null ? '(no certificate here)' : `${d.expiresAt}${d.certificate?.ofCa === false ? ' (replaced CA)' : ''}`;
  if (d.auth === 'unknown' || d.token?.state !== 'active') return '-';
  return d.expiresAt === null ? 'never' : `${d.expiresAt}${d.token.expired ? ' (expired)' : ''}`;
}

export function deviceTable(devices: DeviceSummary[]): string {
  const rows = [['ID', 'AUTH', 'EXPIRES', 'DAYS LEFT', 'TOKEN', 'REVOKED', 'SIGNING KEY', 'SUPERSEDED']];
  for (const d of devices) {
    rows.push([
      d.id,
      d.auth,
      expiryText(d),
      d.expiresAt === null ? '-' : String(daysUntil(d.expiresAt)),
      d.token ? d.token.state : '-',
      d.revoked ? `yes${d.revokedAt ? ` (${d.revokedAt})` : ''}` : 'no',
      d.signingKeyRegistered ? 'registered' : 'not registered',
      d.superseded.length > 0 ? `${d.superseded.length} still valid` : '-',
    ]);
  }
  // What a rotation leaves to do, under the table: the renewal kept the old certificates valid so
  // that the device is not cut off before it has the new one.
  const pending = [
    ...devices
      .filter((d) => d.superseded.length > 0)
      .map((d) => `${d.id}: ${d.superseded.length} superseded certificate(s) still valid; once the device connects with its newest, revoke them: bin/fieldstream-admin devices revoke ${d.id} --superseded\n`),
  ];
  // One line, not a renewal per device: npm start's development devices are among them, and issued
  // again under a deployment's CA they would be credentials it accepts (docs/deployment.md).
  const oldCa = devices.filter((d) => d.certificate?.ofCa === false && !d.revoked).map((d) => d.id);
  if (oldCa.length > 0) {
    pending.push(
      `Certificates of a replaced CA (--new-ca), which the servers refuse: ${oldCa.join(', ')}. Issue again those of devices in use\n` +
        `(bin/fieldstream-admin devices renew ID, and the new bundle to the device); npm start's development devices are left as they are.\n`,
    );
  }
  return columns(rows) + (pending.length > 0 ? `\n${pending.join('')}` : '');
}

export function deviceDetails(d: DeviceSummary): string {
  const c = d.certificate;
  const t = d.token;
  const tokenText = !t
    ? '(none)'
    : t.state === 'revoked'
      ? `revoked ${t.revokedAt}`
      : t.state === 'unreadable'
        ? 'unreadable (the tokens file cannot be read)'
      : t.expiresAt === null
        ? `active since ${t.issuedAt}, expires never (issued before tokens expired; renew --token gives it an expiry date)`
        : `active since ${t.issuedAt}, expires ${t.expiresAt} (${t.expired ? 'expired: the gateways refuse it; renew --token' : `${daysUntil(t.expiresAt)} days left`})`;
  return [
    `device ${d.id}`,
    `  auth:          ${d.auth === 'token' ? 'device token' : d.auth === 'certificate' ? 'client certificate' : 'unknown (no certificate, CA log or readable tokens file here to tell)'}, expires ${d.expiresAt ?? (d.auth === 'token' && t?.state === 'active' ? 'never' : '-')}`,
    `  certificate:   ${c ? `serial ${c.serial}, valid ${c.notBefore} to ${c.notAfter} (${c.daysLeft} days left)${c.ofCa === false ? `, of a replaced CA: the servers refuse it (devices renew ${d.id})` : ''}` : '(none on this machine)'}`,
    ...(c ? [`  subject:       ${c.subject}`] : []),
    `  token:         ${tokenText}`,
    `  revoked:       ${d.revoked ? `yes${d.revokedAt ? `, ${d.revokedAt}` : ''}` : 'no'}`,
    `  signing key:   ${d.signingKeyRegistered ? 'registered on the internal side' : 'not registered (its messages are refused)'}`,
    `  device files:  client key ${yesNo(d.deviceFiles.clientKey)}, signing key ${yesNo(d.deviceFiles.signingKey)}`,
    `  bundle:        ${d.bundle ?? '(none)'}`,
    `  superseded:    ${d.superseded.length === 0 ? 'none still valid' : `${d.superseded.length} still valid (serials ${d.superseded.map((s) => s.serial).join(', ')}): devices revoke ${d.id} --superseded`}`,
    `  issued:        ${d.issued.length === 0 ? '(no record)' : d.issued.map((i) => `${i.serial} until ${i.notAfter}${i.revoked ? ' (revoked)' : d.superseded.some((s) => s.serial === i.serial) ? ' (superseded, still valid)' : ''}`).join('\n                 ')}`,
  ].join('\n') + '\n';
}
