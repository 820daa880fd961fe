# One image for the Node services (gateway, distributor, command API, field client); the compose
# files choose the entry point. TypeScript runs through tsx, a runtime dependency.
FROM node:20.18.0-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY tsconfig.json ./
COPY shared ./shared
COPY dmz ./dmz
COPY internal-network ./internal-network
COPY field-client ./field-client
COPY bin ./bin
# The operator's command, run in a service's container (docs/operations.md: dead letters are
# replayed from the distributor's, with its settings and mounts).
COPY pki ./pki
COPY scripts/admin ./scripts/admin
RUN ln -s /app/bin/fieldstream /usr/local/bin/fieldstream
USER node
CMD ["node", "--import", "tsx", "field-client/src/main.ts"]
