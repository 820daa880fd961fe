/**
 * The PostgreSQL settings are shared with the console, which reads history from the same database:
 * they live in internal-network/shared/postgres-settings.ts. This module keeps the sink's imports.
 */
export * from '../../../shared/postgres-settings.ts';
