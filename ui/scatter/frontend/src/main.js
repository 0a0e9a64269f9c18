// Entry point of the component's iframe: one ScatterView, fed by Streamlit's render messages.
import { connect, setComponentValue, setFrameHeight } from './protocol.js';
import { ScatterView } from './view.js';

const view = new ScatterView(document.getElementById('root'), {
  onValue: setComponentValue,
  onHeight: (height) => setFrameHeight(height),
});
window.scatterView = view; // the browser tests and bench/app_scale.py read its state

connect((args) => {
  view.update(args).catch((error) => console.error(error));
});
