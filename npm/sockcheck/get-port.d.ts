// Types of the `sockcheck/get-port` ESM entry: the same declarations as the CommonJS entry.
export * from './lib/get-port.cjs';
export { default } from './lib/get-port.cjs';
