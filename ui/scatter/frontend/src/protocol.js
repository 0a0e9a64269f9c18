// Streamlit's custom-component protocol (components v1, an iframe), by hand: the component
// says it is ready, the app posts "streamlit:render" with the arguments on every script run,
// the component posts its height and its value back.

function post(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, '*');
}

export function connect(onRender) {
  window.addEventListener('message', (event) => {
    if (event.source !== window.parent || !event.data || event.data.type !== 'streamlit:render') return;
    onRender(event.data.args || {}, event.data);
  });
  post('streamlit:componentReady', { apiVersion: 1 });
}

export function setFrameHeight(height) {
  post('streamlit:setFrameHeight', { height });
}

export function setComponentValue(value) {
  post('streamlit:setComponentValue', { value, dataType: 'json' });
}

/** The server's root (Streamlit's baseUrlPath included): the iframe lives at <root>/component/… */
export function serverRoot() {
  const path = window.location.pathname;
  const at = path.indexOf('/component/');
  return at >= 0 ? path.slice(0, at) : '';
}
