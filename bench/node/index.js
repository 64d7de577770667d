// The index Amplify generates for a trigger with several modules: it
// loops through them in order, each seeing what the previous left.
const moduleNames = (process.env.MODULES || 'email-deny-list,email-allow-list,auto-confirm').split(',');
const modules = moduleNames.map((name) => require(`./${name}`));

exports.handler = async (event, context) => {
  for (let i = 0; i < modules.length; i += 1) {
    const { handler } = modules[i];
    await handler(event, context);
  }
  return event;
};
