import '@fontsource-variable/inter/wght.css';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import { App } from './App.js';
import './styles.css';

const root = document.getElementById('root');
if (!root) throw new Error('index.html has no #root element');

// StrictMode on purpose: the SDK promises one socket under its double mount, and the demo is
// where a browser test can see that promise kept.
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
