// The web app's words in English and Russian, and the language the pages speak.
//
// - `t(key, params)` is the text of `key` in the current language, with `{name}` replaced by
//   `params.name`. An entry may be a plural: { one, few, many, other }, chosen by `params.n`
//   with the language's rules (Intl.PluralRules: Russian has one / few / many).
// - Keys are the keys of `en`: a key that is not there does not compile, and `ru` must have
//   every key of `en` (and no other): a missing Russian string is a tsc error.
// - The language: the one stored in localStorage (`pxs_lang`) when the user chose it with the
//   switch, else the browser's (navigator.languages), else English.
// - Static markup: `data-i18n="key"` (text), `data-i18n-placeholder`, `data-i18n-title`,
//   `data-i18n-aria-label` are filled by `applyTranslations(root)`, which the switch calls.
//
// To move a page onto it: add its keys under its own prefix (`catalog.`, `play.`) to both
// dictionaries of its own module (words-catalog.ts, words-play.ts), replace literal strings with t(...) or data-i18n, put `languageSwitch()` in its
// header, and redraw what it rendered in `onLangChange`.
//
// Nothing here touches the DOM, navigator or storage when the module loads, so tests can import
// the dictionaries (`messages`) outside a browser.

import * as catalogWords from './words-catalog';
import * as playWords from './words-play';

export type Lang = 'en' | 'ru';
export const LANGS: readonly Lang[] = ['en', 'ru'];
/** Each language by its own name (the same in every language, as switches show them). */
export const LANG_NAMES: Record<Lang, string> = { en: 'English', ru: 'Русский' };

export interface Plural {
    one: string;
    few?: string;
    many?: string;
    other: string;
}
export type Entry = string | Plural;

const core = {
    // ---- shared
    'lang.label': 'Language',
    'state.scheduled': 'scheduled',
    'state.queued': 'queued',
    'state.starting': 'starting',
    'state.ready': 'ready',
    'state.ended': 'ended',
    'state.failed': 'failed',
    'nodeState.online': 'online',
    'nodeState.offline': 'offline',
    'nodeState.draining': 'draining',
    'nodeState.drained': 'drained',
    'reason.cancelled': 'cancelled before it started',
    'reason.stopped': 'stopped',
    'reason.stoppedByAdmin': 'ended by an operator',
    'reason.stoppedByOwner': 'ended by its owner',
    'reason.window_end': 'its booked time is over',
    'reason.window_missed': 'its booked time passed before it could start',
    'reason.node_lost': 'the server running it went offline',
    'reason.no_capacity': 'no server could take it',
    'reason.idle': 'nobody used it for a while',
    'reason.empty': 'nobody was connected for a while',
    'reason.max_duration': 'it reached its time limit',
    'reason.exited': 'the application quit',
    'reason.crashed': 'the application crashed',
    'reason.start_timeout': 'the application took too long to start',
    'reason.spawn_failed': 'the application could not be started',
    'reason.rejected': 'the server refused to start it',
    'reason.drained': 'the server was taken out of service',
    'reason.node_shutdown': 'the server shut down',
    'reason.node_restart': 'the server restarted',
    'error.network': 'Could not reach the coordinator. Check the connection and try again.',
    'error.unauthorized': 'The admin token is not valid (any more).',
    'error.forbidden': 'This token may not do that: it is not an admin token.',
    'error.tooMany': 'Too many requests; try again in a moment.',
    'error.server': 'The coordinator had a problem (HTTP {status}). Try again in a moment.',
    'error.refused': 'Refused: {message}',
    'error.stale': 'Could not refresh; what you see may be out of date. {message}',
    'unit.seconds': '{n} s',
    'unit.s': 's',
    'unit.min': 'min',
    'unit.h': 'h',
    'unit.d': 'd',
    'unit.gib': 'GiB',

    // ---- admin console
    'admin.pageTitle': 'pxs — admin console',
    'admin.heading': 'Admin console',
    'admin.signOut': 'Sign out',
    'nav.catalog': 'Catalog',
    'nav.api': 'API reference',
    'nav.overview': 'Overview',
    'nav.nodes': 'Nodes',
    'nav.sessions': 'Live sessions',
    'nav.history': 'History',
    'nav.titles': 'Titles',
    'nav.tokens': 'Tokens',
    'login.title': 'Sign in',
    'login.lead': 'Paste an admin token. The coordinator printed one at its first start; admins can mint more under Tokens.',
    'login.token': 'Admin token',
    'login.placeholder': 'pxs_adm_…',
    'login.remember': 'Keep me signed in on this device',
    'login.submit': 'Sign in',
    'login.empty': 'Paste a token first.',
    'login.invalid': 'This token is not valid.',
    'login.notAdmin': 'This is not an admin token: it cannot open the console.',
    'login.expired': 'The token stopped working (revoked?). Sign in again.',
    'overview.title': 'Overview',
    'overview.lead': 'Live numbers from the coordinator, read every few seconds while this page is open.',
    'overview.nodes': 'Nodes by state',
    'chart.sessions': 'Live sessions',
    'chart.queue': 'Queue length',
    'chart.latency': 'Start time',
    'nodes.title': 'Nodes',
    'nodes.lead': 'The session servers. Draining a node stops new sessions there; running ones go on until they end, or until the deadline.',
    'nodes.deadline': 'Deadline for a drain',
    'nodes.deadline.none': 'none: sessions end by themselves',
    'nodes.deadline.5min': 'in 5 minutes',
    'nodes.deadline.15min': 'in 15 minutes',
    'nodes.deadline.1h': 'in 1 hour',
    'nodes.col.node': 'Node',
    'nodes.col.state': 'State',
    'nodes.col.sessions': 'Sessions',
    'nodes.col.gpus': 'GPUs',
    'nodes.col.applications': 'Applications',
    'nodes.col.heartbeat': 'Last heartbeat',
    'nodes.col.actions': 'Actions',
    'nodes.sessionsOf': '{n} of {max}',
    'nodes.freeReserved': '{free} free, {reserved} reserved',
    'nodes.noGpus': 'none',
    'nodes.until': 'until {time}',
    'nodes.drain': 'Drain',
    'nodes.resume': 'Resume',
    'nodes.drained': 'Node {node} drains: no new sessions there.',
    'nodes.resumed': 'Node {node} takes sessions again.',
    'nodes.none': 'No node has linked yet. Start a session server with a node token.',
    'sessions.title': 'Live sessions',
    'sessions.lead': 'Sessions that run, start, wait in the queue or are booked. Ending one stops its application for everyone in it.',
    'sessions.col.title': 'Title',
    'sessions.col.state': 'State',
    'sessions.col.node': 'Node',
    'sessions.col.owner': 'Owner',
    'sessions.col.players': 'Users connected',
    'sessions.col.age': 'Age',
    'sessions.col.actions': 'Actions',
    'sessions.position': 'number {n} in line',
    'sessions.unknown': 'not known',
    'sessions.end': 'End',
    'sessions.confirmEnd': 'End the session of {title} ({id}) for everyone in it?',
    'sessions.ending': 'Session {id} is being ended.',
    'sessions.none': 'No live sessions.',
    'owner.anonymous': 'anonymous',
    'history.title': 'Session history',
    'history.lead': 'Sessions that are over, newest first (at most 200).',
    'history.state': 'Outcome',
    'history.anyEnd': 'ended or failed',
    'history.reason': 'Reason',
    'history.anyReason': 'any reason',
    'history.titleFilter': 'Title',
    'history.nodeFilter': 'Node',
    'history.any': 'any',
    'history.col.reason': 'Why it ended',
    'history.col.started': 'Started',
    'history.col.length': 'Length',
    'history.exitCode': 'exit code {code}',
    'history.none': 'No sessions match.',
    'titles.title': 'Titles',
    'titles.lead': 'The catalog. Public titles are listed to everyone, private ones to signed-in users. Titles made from a node’s application may wait for approval.',
    'titles.new': 'New title',
    'titles.edit': 'Edit title',
    'titles.name': 'Name',
    'titles.id': 'Id',
    'titles.idHint': 'Letters, digits, - _ . ; made up when empty.',
    'titles.idPlaceholder': 'made up when empty',
    'titles.application': 'Application',
    'titles.applicationHint': 'The application id the nodes advertise.',
    'titles.image': 'Image URL',
    'titles.visibility': 'Visibility',
    'titles.public': 'public',
    'titles.private': 'private',
    'titles.maxPlayers': 'Users per session',
    'titles.idle': 'Idle timeout, seconds',
    'titles.empty': 'Empty timeout, seconds',
    'titles.maxDuration': 'Longest session, seconds',
    'titles.zeroUnlimited': '0 = no limit',
    'titles.description': 'Description',
    'titles.create': 'Create',
    'titles.save': 'Save',
    'titles.cancel': 'Cancel',
    'titles.created': 'Title “{name}” created.',
    'titles.saved': 'Title “{name}” saved.',
    'titles.approve': 'Approve',
    'titles.approved': 'Title “{name}” approved: users see it now.',
    'titles.editButton': 'Edit',
    'titles.delete': 'Delete',
    'titles.deleted': 'Title “{name}” deleted.',
    'titles.confirmDelete': 'Delete the title “{name}”? Nodes will not make it again.',
    'titles.col.title': 'Title',
    'titles.col.visibility': 'Visibility',
    'titles.col.limits': 'Limits',
    'titles.col.availability': 'Availability',
    'titles.col.source': 'Made by',
    'titles.col.actions': 'Actions',
    'titles.limitPlayers': 'users: {n}',
    'titles.limitIdle': 'idle: {d}',
    'titles.limitEmpty': 'empty: {d}',
    'titles.limitLength': 'length: {d}',
    'titles.availability': 'free slots: {free}, nodes: {nodes}, waiting: {queued}',
    'titles.fromAdmin': 'an admin',
    'titles.fromNode': 'a node',
    'titles.pending': 'awaits approval',
    'titles.none': 'No titles yet.',
    'tokens.title': 'Tokens',
    'tokens.lead': 'User tokens sign people in; admin tokens open this console and the API; node tokens link session servers. A token is shown once, when it is made; revoking one stops it at once.',
    'tokens.newApi': 'New user or admin token',
    'tokens.newNode': 'New node token',
    'tokens.name': 'Name',
    'tokens.role': 'Role',
    'tokens.roleUser': 'user',
    'tokens.roleAdmin': 'admin',
    'tokens.node': 'Bound to node',
    'tokens.nodeHint': 'Only this node name may link with it. Empty: any name.',
    'tokens.nodePlaceholder': 'gpu-7',
    'tokens.mint': 'Make token',
    'tokens.mintedTitle': 'Copy the token now',
    'tokens.mintedLead': 'The token “{name}” is shown this once; the coordinator keeps only its hash.',
    'tokens.copy': 'Copy',
    'tokens.apiList': 'User and admin tokens',
    'tokens.nodeList': 'Node tokens',
    'tokens.col.name': 'Name',
    'tokens.col.role': 'Role',
    'tokens.col.node': 'Node',
    'tokens.col.created': 'Made',
    'tokens.col.actions': 'Actions',
    'tokens.anyNode': 'any node',
    'tokens.revoke': 'Revoke',
    'tokens.confirmRevoke': 'Revoke the token “{name}”? Whoever uses it is refused at once.',
    'tokens.revoked': 'Token “{name}” revoked.',
    'tokens.none': 'None.',

    // ---- API reference
    'apiref.pageTitle': 'pxs — API reference',
    'apiref.heading': 'API reference',
    'apiref.lead': 'Every endpoint of the coordinator’s REST API, from {url}. Send tokens as Authorization: Bearer <token>.',
    'apiref.loading': 'Loading the API description…',
    'apiref.failed': 'Could not load the API description: {message}',
    'apiref.endpoints': 'Endpoints',
    'apiref.schemas': 'Schemas',
    'apiref.access': 'Who',
    'apiref.public': 'public',
    'apiref.anyone': 'anyone (a token is optional)',
    'apiref.user': 'user token',
    'apiref.admin': 'admin token',
    'apiref.parameters': 'Parameters',
    'apiref.body': 'Request body',
    'apiref.responses': 'Responses',
    'apiref.col.name': 'Name',
    'apiref.col.in': 'In',
    'apiref.col.type': 'Type',
    'apiref.col.required': 'Required',
    'apiref.col.description': 'Description',
    'apiref.col.status': 'Status',
    'apiref.yes': 'yes',
    'apiref.no': 'no',
    'apiref.in.path': 'path',
    'apiref.in.query': 'query',
    'apiref.properties': 'Fields',
    'apiref.back': 'Admin console'
} satisfies Record<string, Entry>;

// Each page's own words live in a module of their own (`words-<page>.ts`: an `en` object and a
// `ru` typed against it), merged here, so that pages can gain words without touching this file.
const en = { ...core, ...catalogWords.en, ...playWords.en };

export type Key = keyof typeof en;
export type Messages = { [K in Key]: Entry };

const coreRu: { [K in keyof typeof core]: Entry } = {
    'lang.label': 'Язык',
    'state.scheduled': 'забронирована',
    'state.queued': 'в очереди',
    'state.starting': 'запускается',
    'state.ready': 'работает',
    'state.ended': 'завершена',
    'state.failed': 'сбой',
    'nodeState.online': 'в работе',
    'nodeState.offline': 'не на связи',
    'nodeState.draining': 'выводится из работы',
    'nodeState.drained': 'выведен из работы',
    'reason.cancelled': 'отменена до запуска',
    'reason.stopped': 'остановлена',
    'reason.stoppedByAdmin': 'завершена оператором',
    'reason.stoppedByOwner': 'завершена владельцем',
    'reason.window_end': 'забронированное время истекло',
    'reason.window_missed': 'забронированное время прошло до запуска',
    'reason.node_lost': 'сервер, на котором она шла, перестал отвечать',
    'reason.no_capacity': 'ни один сервер не смог её принять',
    'reason.idle': 'ею долго никто не пользовался',
    'reason.empty': 'к ней долго никто не был подключён',
    'reason.max_duration': 'достигнут предел времени',
    'reason.exited': 'приложение завершилось',
    'reason.crashed': 'приложение аварийно завершилось',
    'reason.start_timeout': 'приложение слишком долго запускалось',
    'reason.spawn_failed': 'приложение не удалось запустить',
    'reason.rejected': 'сервер отказался её запускать',
    'reason.drained': 'сервер выведен из работы',
    'reason.node_shutdown': 'сервер выключился',
    'reason.node_restart': 'сервер перезапустился',
    'error.network': 'Координатор недоступен. Проверьте соединение и повторите попытку.',
    'error.unauthorized': 'Токен администратора недействителен.',
    'error.forbidden': 'Этому токену это не разрешено: это не токен администратора.',
    'error.tooMany': 'Слишком много запросов; повторите чуть позже.',
    'error.server': 'Ошибка на стороне координатора (HTTP {status}). Повторите чуть позже.',
    'error.refused': 'Отказано: {message}',
    'error.stale': 'Не удалось обновить данные; показанное может быть устаревшим. {message}',
    'unit.seconds': '{n} с',
    'unit.s': 'с',
    'unit.min': 'мин',
    'unit.h': 'ч',
    'unit.d': 'д',
    'unit.gib': 'ГиБ',

    'admin.pageTitle': 'pxs — консоль администратора',
    'admin.heading': 'Консоль администратора',
    'admin.signOut': 'Выйти',
    'nav.catalog': 'Каталог',
    'nav.api': 'Справочник API',
    'nav.overview': 'Обзор',
    'nav.nodes': 'Узлы',
    'nav.sessions': 'Активные сеансы',
    'nav.history': 'История',
    'nav.titles': 'Приложения',
    'nav.tokens': 'Токены',
    'login.title': 'Вход',
    'login.lead': 'Вставьте токен администратора. Координатор вывел его при первом запуске; администраторы выпускают новые в разделе «Токены».',
    'login.token': 'Токен администратора',
    'login.placeholder': 'pxs_adm_…',
    'login.remember': 'Не выходить на этом устройстве',
    'login.submit': 'Войти',
    'login.empty': 'Сначала вставьте токен.',
    'login.invalid': 'Этот токен недействителен.',
    'login.notAdmin': 'Это не токен администратора: с ним консоль не открыть.',
    'login.expired': 'Токен перестал действовать (отозван?). Войдите снова.',
    'overview.title': 'Обзор',
    'overview.lead': 'Текущие показатели координатора; пока страница открыта, они обновляются каждые несколько секунд.',
    'overview.nodes': 'Узлы по состояниям',
    'chart.sessions': 'Активные сеансы',
    'chart.queue': 'Длина очереди',
    'chart.latency': 'Время запуска',
    'nodes.title': 'Узлы',
    'nodes.lead': 'Серверы сеансов. На выводимом из работы узле новые сеансы не запускаются; идущие продолжаются до своего конца или до срока.',
    'nodes.deadline': 'Срок вывода из работы',
    'nodes.deadline.none': 'без срока: сеансы завершатся сами',
    'nodes.deadline.5min': 'через 5 минут',
    'nodes.deadline.15min': 'через 15 минут',
    'nodes.deadline.1h': 'через 1 час',
    'nodes.col.node': 'Узел',
    'nodes.col.state': 'Состояние',
    'nodes.col.sessions': 'Сеансы',
    'nodes.col.gpus': 'Видеокарты',
    'nodes.col.applications': 'Программы',
    'nodes.col.heartbeat': 'Последний сигнал',
    'nodes.col.actions': 'Действия',
    'nodes.sessionsOf': '{n} из {max}',
    'nodes.freeReserved': 'свободно: {free}, забронировано: {reserved}',
    'nodes.noGpus': 'нет',
    'nodes.until': 'до {time}',
    'nodes.drain': 'Вывести из работы',
    'nodes.resume': 'Вернуть в работу',
    'nodes.drained': 'Узел {node} выводится из работы: новых сеансов на нём не будет.',
    'nodes.resumed': 'Узел {node} снова принимает сеансы.',
    'nodes.none': 'Ни один узел ещё не подключился. Запустите сервер сеансов с токеном узла.',
    'sessions.title': 'Активные сеансы',
    'sessions.lead': 'Сеансы, которые идут, запускаются, ждут в очереди или забронированы. Завершение сеанса останавливает приложение для всех его участников.',
    'sessions.col.title': 'Приложение',
    'sessions.col.state': 'Состояние',
    'sessions.col.node': 'Узел',
    'sessions.col.owner': 'Владелец',
    'sessions.col.players': 'Подключено',
    'sessions.col.age': 'Возраст',
    'sessions.col.actions': 'Действия',
    'sessions.position': '{n}-й в очереди',
    'sessions.unknown': 'неизвестно',
    'sessions.end': 'Завершить',
    'sessions.confirmEnd': 'Завершить сеанс {title} ({id}) для всех участников?',
    'sessions.ending': 'Сеанс {id} завершается.',
    'sessions.none': 'Активных сеансов нет.',
    'owner.anonymous': 'аноним',
    'history.title': 'История сеансов',
    'history.lead': 'Завершённые сеансы, сначала новые (не больше 200).',
    'history.state': 'Итог',
    'history.anyEnd': 'завершена или сбой',
    'history.reason': 'Причина',
    'history.anyReason': 'любая причина',
    'history.titleFilter': 'Приложение',
    'history.nodeFilter': 'Узел',
    'history.any': 'все',
    'history.col.reason': 'Почему завершён',
    'history.col.started': 'Начало',
    'history.col.length': 'Длительность',
    'history.exitCode': 'код выхода {code}',
    'history.none': 'Подходящих сеансов нет.',
    'titles.title': 'Приложения',
    'titles.lead': 'Каталог. Публичные приложения видны всем, закрытые — только вошедшим пользователям. Приложения, пришедшие с узлов, могут ждать одобрения.',
    'titles.new': 'Новое приложение',
    'titles.edit': 'Изменить приложение',
    'titles.name': 'Название',
    'titles.id': 'Идентификатор',
    'titles.idHint': 'Латинские буквы, цифры, - _ . ; если пусто, будет создан.',
    'titles.idPlaceholder': 'если пусто, будет создан',
    'titles.application': 'Программа на узлах',
    'titles.applicationHint': 'Идентификатор программы, который объявляют узлы.',
    'titles.image': 'Адрес картинки',
    'titles.visibility': 'Видимость',
    'titles.public': 'публичное',
    'titles.private': 'закрытое',
    'titles.maxPlayers': 'Участников в сеансе',
    'titles.idle': 'Без действий, секунд',
    'titles.empty': 'Без подключений, секунд',
    'titles.maxDuration': 'Самый долгий сеанс, секунд',
    'titles.zeroUnlimited': '0 — без ограничения',
    'titles.description': 'Описание',
    'titles.create': 'Создать',
    'titles.save': 'Сохранить',
    'titles.cancel': 'Отмена',
    'titles.created': 'Приложение «{name}» создано.',
    'titles.saved': 'Приложение «{name}» сохранено.',
    'titles.approve': 'Одобрить',
    'titles.approved': 'Приложение «{name}» одобрено: теперь его видят пользователи.',
    'titles.editButton': 'Изменить',
    'titles.delete': 'Удалить',
    'titles.deleted': 'Приложение «{name}» удалено.',
    'titles.confirmDelete': 'Удалить приложение «{name}»? Узлы не создадут его заново.',
    'titles.col.title': 'Приложение',
    'titles.col.visibility': 'Видимость',
    'titles.col.limits': 'Ограничения',
    'titles.col.availability': 'Доступность',
    'titles.col.source': 'Кем создано',
    'titles.col.actions': 'Действия',
    'titles.limitPlayers': 'участников: {n}',
    'titles.limitIdle': 'без действий: {d}',
    'titles.limitEmpty': 'без подключений: {d}',
    'titles.limitLength': 'длительность: {d}',
    'titles.availability': 'свободных мест: {free}, узлов: {nodes}, в очереди: {queued}',
    'titles.fromAdmin': 'администратором',
    'titles.fromNode': 'узлом',
    'titles.pending': 'ждёт одобрения',
    'titles.none': 'Приложений пока нет.',
    'tokens.title': 'Токены',
    'tokens.lead': 'Токены пользователей дают вход людям; токены администраторов открывают эту консоль и API; токены узлов подключают серверы сеансов. Токен показывается один раз, при выпуске; отозванный токен перестаёт действовать сразу.',
    'tokens.newApi': 'Новый токен пользователя или администратора',
    'tokens.newNode': 'Новый токен узла',
    'tokens.name': 'Имя',
    'tokens.role': 'Роль',
    'tokens.roleUser': 'пользователь',
    'tokens.roleAdmin': 'администратор',
    'tokens.node': 'Привязан к узлу',
    'tokens.nodeHint': 'Подключиться с ним может только узел с этим именем. Пусто — любой.',
    'tokens.nodePlaceholder': 'gpu-7',
    'tokens.mint': 'Выпустить токен',
    'tokens.mintedTitle': 'Скопируйте токен сейчас',
    'tokens.mintedLead': 'Токен «{name}» показан один раз; координатор хранит только его хеш.',
    'tokens.copy': 'Копировать',
    'tokens.apiList': 'Токены пользователей и администраторов',
    'tokens.nodeList': 'Токены узлов',
    'tokens.col.name': 'Имя',
    'tokens.col.role': 'Роль',
    'tokens.col.node': 'Узел',
    'tokens.col.created': 'Выпущен',
    'tokens.col.actions': 'Действия',
    'tokens.anyNode': 'любой узел',
    'tokens.revoke': 'Отозвать',
    'tokens.confirmRevoke': 'Отозвать токен «{name}»? Запросы с ним будут сразу отклоняться.',
    'tokens.revoked': 'Токен «{name}» отозван.',
    'tokens.none': 'Нет.',

    'apiref.pageTitle': 'pxs — справочник API',
    'apiref.heading': 'Справочник API',
    'apiref.lead': 'Все методы REST API координатора, по описанию {url}. Токен передаётся в заголовке Authorization: Bearer <токен>.',
    'apiref.loading': 'Загрузка описания API…',
    'apiref.failed': 'Не удалось загрузить описание API: {message}',
    'apiref.endpoints': 'Методы',
    'apiref.schemas': 'Схемы',
    'apiref.access': 'Кому',
    'apiref.public': 'всем, без токена',
    'apiref.anyone': 'всем (токен необязателен)',
    'apiref.user': 'токен пользователя',
    'apiref.admin': 'токен администратора',
    'apiref.parameters': 'Параметры',
    'apiref.body': 'Тело запроса',
    'apiref.responses': 'Ответы',
    'apiref.col.name': 'Имя',
    'apiref.col.in': 'Где',
    'apiref.col.type': 'Тип',
    'apiref.col.required': 'Обязателен',
    'apiref.col.description': 'Описание',
    'apiref.col.status': 'Код',
    'apiref.yes': 'да',
    'apiref.no': 'нет',
    'apiref.in.path': 'путь',
    'apiref.in.query': 'запрос',
    'apiref.properties': 'Поля',
    'apiref.back': 'Консоль администратора'
};

const ru: Messages = { ...coreRu, ...catalogWords.ru, ...playWords.ru };

/** Every string, by language (for tests and tools). */
export const messages: Record<Lang, Messages> = { en, ru };

// ---------------------------------------------------------------------------------------------
// The current language

const LANG_KEY = 'pxs_lang';
let current: Lang | null = null;
const listeners: Array<(lang: Lang) => void> = [];

function isLang(v: unknown): v is Lang {
    return typeof v === 'string' && (LANGS as readonly string[]).includes(v);
}

/** The language of a list of BCP 47 tags (`ru-RU` → ru), or null. */
export function langOf(tags: readonly string[]): Lang | null {
    for (const tag of tags) {
        const base = tag.toLowerCase().split('-')[0];
        if (isLang(base)) return base;
    }
    return null;
}

/** The language the pages speak now. */
export function getLang(): Lang {
    if (current) return current;
    let stored: string | null = null;
    try {
        stored = window.localStorage.getItem(LANG_KEY);
    } catch {
        // no storage: the browser's language
    }
    const browser = typeof navigator === 'undefined' ? [] : navigator.languages?.length ? navigator.languages : [navigator.language];
    current = isLang(stored) ? stored : (langOf(browser) ?? 'en');
    return current;
}

/** Switches the language, keeps the choice in this browser, and tells the listeners. */
export function setLang(lang: Lang): void {
    current = lang;
    try {
        window.localStorage.setItem(LANG_KEY, lang);
    } catch {
        // not kept: the browser's language next time
    }
    document.documentElement.lang = lang;
    for (const f of listeners) f(lang);
}

/** Calls `f` after every switch of language. */
export function onLangChange(f: (lang: Lang) => void): void {
    listeners.push(f);
}

export type Params = Record<string, string | number>;

/** The text of `key` in `lang` (default: the current language). */
export function t(key: Key, params: Params = {}, lang: Lang = getLang()): string {
    const entry: Entry = messages[lang][key] ?? en[key];
    let text: string;
    if (typeof entry === 'string') {
        text = entry;
    } else {
        const n = Number(params.n ?? 0);
        const form = new Intl.PluralRules(lang).select(n) as keyof Plural;
        text = entry[form] ?? entry.other;
    }
    return text.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}

/** Fills `data-i18n*` attributes under `root` in the current language. */
export function applyTranslations(root: ParentNode): void {
    const fill = (attr: string, set: (el: HTMLElement, text: string) => void): void => {
        root.querySelectorAll<HTMLElement>(`[${attr}]`).forEach((el) => {
            const key = el.getAttribute(attr);
            if (key && key in en) set(el, t(key as Key));
        });
    };
    fill('data-i18n', (el, text) => (el.textContent = text));
    fill('data-i18n-placeholder', (el, text) => el.setAttribute('placeholder', text));
    fill('data-i18n-title', (el, text) => el.setAttribute('title', text));
    fill('data-i18n-aria-label', (el, text) => el.setAttribute('aria-label', text));
}

/** The language switch: a select of the languages by their own names. */
export function languageSwitch(): HTMLElement {
    const select = document.createElement('select');
    select.className = 'lang-switch';
    select.dataset.testid = 'lang';
    select.setAttribute('data-i18n-aria-label', 'lang.label');
    select.setAttribute('aria-label', t('lang.label'));
    for (const lang of LANGS) {
        const option = document.createElement('option');
        option.value = lang;
        option.lang = lang;
        option.textContent = LANG_NAMES[lang];
        select.append(option);
    }
    select.value = getLang();
    select.addEventListener('change', () => {
        if (isLang(select.value)) setLang(select.value);
    });
    onLangChange((lang) => (select.value = lang));
    return select;
}

// ---------------------------------------------------------------------------------------------
// Numbers and times in the current language

/** A date and time in the user's zone: "25 Nov 2026, 14:05". */
export function formatDateTime(iso: string): string {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(getLang(), { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** `seconds` from now (negative: ago) in words: "12 seconds ago", "12 секунд назад". */
export function formatRelative(seconds: number): string {
    const f = new Intl.RelativeTimeFormat(getLang(), { numeric: 'auto' });
    const a = Math.abs(seconds);
    if (a < 60) return f.format(Math.round(seconds), 'second');
    if (a < 3600) return f.format(Math.round(seconds / 60), 'minute');
    if (a < 86400) return f.format(Math.round(seconds / 3600), 'hour');
    return f.format(Math.round(seconds / 86400), 'day');
}

/** A length of time, short: "45 s", "12 min 5 s", "3 h 20 min", "2 d 4 h". */
export function formatDuration(seconds: number): string {
    const s = Math.max(0, Math.round(seconds));
    const part = (n: number, unit: Key): string => `${n} ${t(unit)}`;
    if (s < 60) return part(s, 'unit.s');
    if (s < 3600) return [part(Math.floor(s / 60), 'unit.min'), s % 60 ? part(s % 60, 'unit.s') : ''].filter(Boolean).join(' ');
    if (s < 86400) return [part(Math.floor(s / 3600), 'unit.h'), Math.floor((s % 3600) / 60) ? part(Math.floor((s % 3600) / 60), 'unit.min') : ''].filter(Boolean).join(' ');
    return [part(Math.floor(s / 86400), 'unit.d'), Math.floor((s % 86400) / 3600) ? part(Math.floor((s % 86400) / 3600), 'unit.h') : ''].filter(Boolean).join(' ');
}
