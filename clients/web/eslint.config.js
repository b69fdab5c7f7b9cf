// @ts-check
import js from '@eslint/js';
import reactHooks from 'eslint-plugin-react-hooks';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  // test-e2e/consumer/ is the packed-tarball test's scratch project, checked by that test itself.
  globalIgnores(['dist/', 'demo/dist/', 'test-artifacts/', 'test-e2e/consumer/']),
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  tseslint.configs.stylisticTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // Type information from tsconfig.json, which covers every TypeScript file linted here;
        // this file itself is outside it and gets the default project.
        projectService: { allowDefaultProject: ['eslint.config.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // `() => setDraft(value)` as a callback is idiomatic; a void value returned from a block,
      // assigned or used in a condition is still reported.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // A number has one obvious text form; null, undefined, objects and arrays still have to be
      // turned into text on purpose.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
    },
  },
  {
    files: ['**/*.{ts,tsx}'],
    extends: [reactHooks.configs.flat['recommended-latest']],
    rules: {
      // A missed dependency is a stale-closure bug, not a style question.
      'react-hooks/exhaustive-deps': 'error',
    },
  },
);
