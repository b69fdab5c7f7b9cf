// The core client on Node with `ws`, whichever module system loaded it: connects to the service,
// publishes one event for its user once connected, and prints the task_update it gets.
const WebSocket = require('ws');

exports.exercise = function exercise(WebSocketSyncClient) {
  const [wsUrl, httpUrl, userId, title] = process.argv.slice(2);
  const client = new WebSocketSyncClient(wsUrl, userId, { WebSocket });
  client.on('connected', () => {
    const event = { event: 'task.created', user_id: userId, task: { id: 1, title } };
    const body = JSON.stringify(event);
    fetch(`${httpUrl}/v1/events`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body })
      .then((response) => {
        if (response.status !== 202) throw new Error(`publish answered ${response.status}`);
      })
      .catch((error) => {
        console.error(error);
        process.exit(1);
      });
  });
  client.addMessageListener((message) => {
    if (message.type !== 'task_update') return;
    console.log(JSON.stringify(message));
    client.disconnect();
  });
  client.connect();
};
