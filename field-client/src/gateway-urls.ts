import { z } from 'zod';
import { setting } from '../../shared/config.ts';

/** GATEWAY_URL's URLs, in the order they are tried (one, or several separated by commas). */
export function gatewayUrls(value: string): string[] {
  return value.split(',').map((u) => u.trim()).filter((u) => u !== '');
}

/**
 * One wss:// URL, or several separated by commas (several DMZ servers, docs/deployment.md "More than
 * one DMZ server"): tried in turn, moving to the next on a failed or lost connection.
 */
export const GatewayUrlListSchema = z
  .string()
  .refine((v) => gatewayUrls(v).length > 0, { message: 'must list at least one wss:// URL' })
  .superRefine((v, ctx) => {
    const one = setting.url(['wss']);
    for (const u of gatewayUrls(v)) {
      const r = one.safeParse(u);
      if (!r.success) ctx.addIssue({ code: 'custom', message: `"${u}" ${r.error.issues[0]?.message ?? 'is not a wss:// URL'}` });
    }
    if (new Set(gatewayUrls(v)).size !== gatewayUrls(v).length) ctx.addIssue({ code: 'custom', message: 'lists a URL twice' });
  });
