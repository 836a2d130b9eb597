// The words of the catalog, the queue and booking pages, "My sessions", in English and Russian (see i18n.ts).
// Keys start with `catalog.`; `ru` must have every key of `en`.
import type { Entry } from './i18n';

export const en = {} satisfies Record<string, Entry>;

export const ru: { [K in keyof typeof en]: Entry } = {};
