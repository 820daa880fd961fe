import { randomBytes } from 'node:crypto';
import type { PkiPaths } from '../../pki/layout.ts';
import { readStoredFeedKey, sealStoredFeed, type StoredFeedKey } from '../../internal-network/shared/stored-feed-auth.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';

/** The stored-feed key of a test PKI (makeTestPki writes one, as onboarding does). */
export const feedKeyOf = (paths: PkiPaths): StoredFeedKey => readStoredFeedKey('test', paths.storedFeedKey);

/** A run's name, as a distributor makes one at its start. */
export const newBoot = (): string => randomBytes(16).toString('base64url');

export interface FeedBody {
  source: string;
  boot: string;
  seq: number;
  sent: number;
  dropped: number;
  points: StoredPoint[];
}

/**
 * A stored-feed message as a distributor publishes it: `body` (its JSON text, or an object made
 * into it) sealed under `key`. What a test publishes on the feed must be this, or the console refuses it.
 */
export function sealedFeed(key: StoredFeedKey, body: Partial<FeedBody> | string): Buffer {
  const text = typeof body === 'string' ? body : JSON.stringify({ source: 'distributor-test', boot: newBoot(), seq: 1, sent: Date.now(), dropped: 0, points: [], ...body });
  return sealStoredFeed(key, Buffer.from(text, 'utf8'));
}
