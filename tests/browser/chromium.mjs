// The one way the browser tests start Debian's chromium through playwright-core (no browser download):
// a throw-away profile, no network side channels; `close()` removes the profile.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launch(viewport) {
  const executablePath = process.env.SKYFUSE_CHROMIUM || '/usr/bin/chromium';
  const userDataDir = mkdtempSync(join(tmpdir(), 'skyfuse-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport,
  });
  const page = context.pages()[0] || (await context.newPage());
  async function close() {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
  return { page, close };
}
