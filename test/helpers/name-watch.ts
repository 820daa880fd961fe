/**
 * Counts the `name`s defined on functions from the moment this module is evaluated: import it
 * before any module whose closures are to be counted. tsx compiles with esbuild's keepNames, whose
 * helper takes Object.defineProperty when each module is evaluated, and calls it for every named
 * closure made (test/unit/hot-path-closures.test.ts).
 */
const define = Object.defineProperty;
export const watched = { names: 0 };
Object.defineProperty = function counting<T>(target: T, key: PropertyKey, descriptor: PropertyDescriptor & ThisType<unknown>): T {
  if (key === 'name') watched.names++;
  return define(target, key, descriptor);
};
