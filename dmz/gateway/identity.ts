import type { TLSSocket } from 'node:tls';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../shared/errors.ts';

/**
 * A device's identity is the CN of the client certificate that the TLS layer verified against our
 * CA, and nothing the device writes in a message. The certificate must also be a *device*
 * certificate (OU "devices"): a service certificate from the same CA does not make its holder a device.
 */
export interface DeviceIdentity {
  deviceId: string;
  /** certificate serial, for the log */
  serial: string;
}

export function identityFromTlsSocket(socket: TLSSocket): DeviceIdentity {
  if (!socket.authorized) {
    throw new FieldStreamError('GATEWAY_NO_CLIENT_CERTIFICATE', `No verified client certificate (${socket.authorizationError ?? 'none presented'}).`);
  }
  const cert = socket.getPeerCertificate();
  const cn = cert?.subject?.CN;
  const ou = cert?.subject?.OU;
  if (typeof cn !== 'string' || ou !== 'devices' || !DeviceIdSchema.safeParse(cn).success) {
    throw new FieldStreamError('GATEWAY_NOT_A_DEVICE_CERTIFICATE', undefined, { cn: typeof cn === 'string' ? cn.slice(0, 100) : null, ou: ou ?? null });
  }
  return { deviceId: cn, serial: cert.serialNumber };
}
