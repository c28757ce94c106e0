// Where the server under test is: set by tests/test_node_clients.py.
const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run these through tests/test_node_clients.py`);
  return value;
};

export const URL_ = need("INFERD_URL").replace(/\/$/, "");
export const KEY = need("INFERD_API_KEY");
export const IMAGE_MODEL = need("INFERD_IMAGE_MODEL");
export const CHAT_MODEL = need("INFERD_CHAT_MODEL");

export const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export const isPng = (bytes) => PNG_MAGIC.every((b, i) => bytes[i] === b);
