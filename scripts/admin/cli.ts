/**
 * The entry of bin/fieldstream-admin (and `bin/fieldstream admin`): settings from the environment
 * and `.env` (as the services read them), then one command; its exit code is the process's.
 */
import { loadDotenv } from '../../shared/config.ts';
import { runAdmin } from './run.ts';

loadDotenv();
const code = await runAdmin(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
  cwd: process.cwd(),
});
process.exitCode = code;
