// The component side of a Lambda-style handler: exports the contract's
// `pre-sign-up` interface (world triggerfish:user-pool/pre-sign-up-plugin),
// builds the event a Lambda function would get from the typed arguments,
// calls `handler(event)`, and hands back `event.response` or, when the
// handler throws, its message as the denial. `process.env.NAME` reads the
// plugin's config key `name` (lower case, `_` as `-`), and `console` goes
// to the host's log.

import { get as configGet } from 'triggerfish:host/config@0.1.0';
import { write as logWrite } from 'triggerfish:host/log@0.1.0';
import { handler } from './handler.mjs';

globalThis.process = {
  env: new Proxy(
    {},
    {
      get: (_, name) =>
        typeof name === 'string'
          ? configGet(name.toLowerCase().replaceAll('_', '-'))
          : undefined,
    },
  ),
};

const text = (args) =>
  args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
globalThis.console = {
  debug: (...args) => logWrite('debug', text(args)),
  log: (...args) => logWrite('info', text(args)),
  info: (...args) => logWrite('info', text(args)),
  warn: (...args) => logWrite('warn', text(args)),
  error: (...args) => logWrite('error', text(args)),
};

// A WIT `list<tuple<string, string>>` is an array of pairs; Lambda events
// carry a JSON object.
const toObject = (pairs) => Object.fromEntries(pairs);

export const preSignUp = {
  async handle(context, request, response) {
    const event = {
      version: context.version,
      triggerSource: context.triggerSource,
      region: context.region,
      userPoolId: context.userPoolId,
      userName: context.userName,
      callerContext: {
        awsSdkVersion: context.callerContext.awsSdkVersion,
        clientId: context.callerContext.clientId,
      },
      request: {
        userAttributes: toObject(request.userAttributes),
        validationData: toObject(request.validationData),
        clientMetadata: toObject(request.clientMetadata),
      },
      response: { ...response },
    };
    let result;
    try {
      result = (await handler(event)) ?? event;
    } catch (e) {
      // Lambda reports `errorMessage`; Cognito shows it after "failed with error".
      throw typeof e === 'string' ? e : String(e?.message ?? e);
    }
    const out = result.response ?? {};
    return {
      autoConfirmUser: out.autoConfirmUser ?? undefined,
      autoVerifyEmail: out.autoVerifyEmail ?? undefined,
      autoVerifyPhone: out.autoVerifyPhone ?? undefined,
    };
  },
};
