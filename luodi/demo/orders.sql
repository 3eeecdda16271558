-- Demo bank database for the customer-service assistant and the agent's read-only SQL tool.
-- Fictional data. Loaded by luodi.agent.assistant.ensure_demo() into $LUODI_HOME/demo/orders.db.
CREATE TABLE customers (
  id TEXT PRIMARY KEY,          -- e.g. C001
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  city TEXT NOT NULL,
  joined TEXT NOT NULL          -- ISO date
);
CREATE TABLE accounts (
  id TEXT PRIMARY KEY,          -- e.g. AC1001
  customer_id TEXT NOT NULL REFERENCES customers(id),
  type TEXT NOT NULL,           -- checking | savings
  balance REAL NOT NULL,
  currency TEXT NOT NULL,
  status TEXT NOT NULL          -- active | frozen | closed
);
CREATE TABLE cards (
  id TEXT PRIMARY KEY,          -- e.g. K501
  customer_id TEXT NOT NULL REFERENCES customers(id),
  last4 TEXT NOT NULL,
  kind TEXT NOT NULL,           -- debit | credit | virtual
  status TEXT NOT NULL,         -- active | blocked | expired | in_delivery
  expires TEXT NOT NULL
);
CREATE TABLE orders (
  id TEXT PRIMARY KEY,          -- e.g. A1001: card and cheque-book orders
  customer_id TEXT NOT NULL REFERENCES customers(id),
  item TEXT NOT NULL,
  amount REAL NOT NULL,         -- fee charged, in EUR
  status TEXT NOT NULL,         -- processing | shipped | delivered | cancelled
  placed_at TEXT NOT NULL,
  eta TEXT,                     -- expected delivery date
  tracking TEXT
);
CREATE TABLE transactions (
  id INTEGER PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  at TEXT NOT NULL,
  amount REAL NOT NULL,         -- negative = money out
  description TEXT NOT NULL,
  status TEXT NOT NULL          -- booked | pending | reverted
);

INSERT INTO customers VALUES
 ('C001', 'Alice Martin', 'alice@example.com', 'Lyon', '2021-03-14'),
 ('C002', 'Bob Chen', 'bob@example.com', 'Shanghai', '2022-07-01'),
 ('C003', 'Carla Rossi', 'carla@example.com', 'Milan', '2019-11-20'),
 ('C004', 'David Okafor', 'david@example.com', 'Lagos', '2023-01-09'),
 ('C005', 'Eva Novak', 'eva@example.com', 'Prague', '2020-05-30');

INSERT INTO accounts VALUES
 ('AC1001', 'C001', 'checking', 2450.75, 'EUR', 'active'),
 ('AC1002', 'C001', 'savings', 10200.00, 'EUR', 'active'),
 ('AC2001', 'C002', 'checking', 830.10, 'CNY', 'active'),
 ('AC3001', 'C003', 'checking', 15.40, 'EUR', 'frozen'),
 ('AC4001', 'C004', 'checking', 5120.00, 'USD', 'active'),
 ('AC5001', 'C005', 'savings', 0.00, 'EUR', 'closed');

INSERT INTO cards VALUES
 ('K501', 'C001', '4821', 'debit', 'active', '2028-04'),
 ('K502', 'C001', '7730', 'virtual', 'active', '2027-01'),
 ('K503', 'C002', '1190', 'debit', 'in_delivery', '2030-11'),
 ('K504', 'C003', '5567', 'credit', 'blocked', '2027-08'),
 ('K505', 'C004', '3302', 'debit', 'expired', '2025-02');

INSERT INTO orders VALUES
 ('A1001', 'C001', 'replacement debit card', 0.0, 'delivered', '2026-10-02', '2026-10-09', 'TRK-88120'),
 ('A1002', 'C002', 'new debit card', 0.0, 'shipped', '2026-11-15', '2026-11-25', 'TRK-90311'),
 ('A1003', 'C003', 'cheque book', 5.0, 'processing', '2026-11-20', '2026-11-30', NULL),
 ('A1004', 'C004', 'replacement debit card', 10.0, 'cancelled', '2026-09-01', NULL, NULL),
 ('A1005', 'C001', 'metal credit card', 49.0, 'processing', '2026-11-21', '2026-12-05', NULL),
 ('A1006', 'C005', 'cheque book', 5.0, 'delivered', '2026-06-10', '2026-06-17', 'TRK-71002');

INSERT INTO transactions (account_id, at, amount, description, status) VALUES
 ('AC1001', '2026-11-18', -42.50, 'Grocery Market Lyon', 'booked'),
 ('AC1001', '2026-11-19', -120.00, 'ATM withdrawal', 'booked'),
 ('AC1001', '2026-11-20', 2100.00, 'Salary ACME SA', 'booked'),
 ('AC1001', '2026-11-21', -19.99, 'StreamFlix subscription', 'pending'),
 ('AC2001', '2026-11-17', -300.00, 'Transfer to Li Wei', 'pending'),
 ('AC2001', '2026-11-19', -58.20, 'Metro card top-up', 'booked'),
 ('AC3001', '2026-11-02', -250.00, 'Online shop refund reversal', 'reverted'),
 ('AC4001', '2026-11-12', -75.00, 'Airline ticket', 'booked'),
 ('AC4001', '2026-11-13', 75.00, 'Airline ticket refund', 'pending');
