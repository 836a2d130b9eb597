// The words of the player page and its side panel (room.ts), in English and Russian (see i18n.ts).
// Keys start with `play.`; `ru` must have every key of `en`.
import type { Entry } from './i18n';

export const en = {} satisfies Record<string, Entry>;

export const ru: { [K in keyof typeof en]: Entry } = {};
