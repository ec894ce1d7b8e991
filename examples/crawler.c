/* A crawler limited by a semaphore, against a site it serves itself on
   127.0.0.1 (any free port), so it runs anywhere and stops by itself.
   Each page "/N" lists links to other pages; the crawler fetches "/0",
   then every page it finds, each fetch in a task of one task group, at
   most 3 connections at a time (the semaphore).

   The count (tests/ergonomics_check.sh, run by make test): the Python's
   non-blank lines less comments and imports, against this file's
   non-blank lines less comments and preprocessor lines, its state structs
   counted apart; the C may not take more than the Python plus the state.
   The site (serve_page, and the C that serves the pages) is left out of
   both counts; the script prints its lines apart.

   The Python it mirrors:
   [python, not counted]
     async def serve_page(reader, writer):
         n = int((await reader.readline()).split()[1][1:])
         await asyncio.sleep(0.01)
         links = [f'/{(3 * n + k) % 40}' for k in (1, 2, 3)] + ['/0']
         writer.write(' '.join(links).encode() + b'\n')
         await writer.drain()
         writer.close()
   [end]
   [python]
     import asyncio

     async def fetch(sem, port, path):
         async with sem:
             reader, writer = await asyncio.open_connection('127.0.0.1', port)
             writer.write(f'GET {path}\n'.encode())
             body = await reader.read()
             writer.close()
         return body.decode().split()

     async def crawl(sem, tg, port, path, seen):
         for link in await fetch(sem, port, path):
             if link not in seen:
                 seen.add(link)
                 tg.create_task(crawl(sem, tg, port, link, seen))

     async def main():
         server = await asyncio.start_server(serve_page, '127.0.0.1', 0)
         port = server.sockets[0].getsockname()[1]
         sem = asyncio.Semaphore(3)
         seen = {'/0'}
         async with asyncio.TaskGroup() as tg:
             tg.create_task(crawl(sem, tg, port, '/0', seen))
         server.close()
         await server.wait_closed()
         print(f'{len(seen)} pages')

     asyncio.run(main())
   [end]

   Build: cc -std=c99 crawler.c -o crawler -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGES 40

typedef struct site site;
typedef struct {
  site *w;
  int page, len;
  char req[16], *link;
  evl_stream *conn;
} crawl_state;
struct site {
  evl_semaphore *sem;
  evl_task_group *tg;
  evl_server *server;
  int port, pages;
  unsigned char seen[PAGES];
  crawl_state first;
};

/* [not counted] the site: page N links to 3N+1 .. 3N+3 (mod PAGES) and 0 */
typedef struct {
  evl_stream *s;
  int n;
  char body[64];
} page_state;

EVL_TASK(serve_page, t, page_state, p)
  EVL_AWAIT(t, evl_stream_readline(p->s));
  p->n = atoi((const char *)((evl_bytes *)evl_await_result(t))->data + 5);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  snprintf(p->body, sizeof p->body, "/%d /%d /%d /0\n", (3 * p->n + 1) % PAGES,
           (3 * p->n + 2) % PAGES, (3 * p->n + 3) % PAGES);
  evl_stream_write(p->s, p->body, strlen(p->body));
  evl_stream_write_eof(p->s);
  EVL_AWAIT(t, evl_stream_drain(p->s));
  EVL_FINALLY(t);
  evl_stream_free(p->s);
EVL_TASK_END(t)

static void client_connected(evl_stream *s, void *arg) {
  page_state p;
  memset(&p, 0, sizeof p);
  p.s = s;
  (void)arg;
  evl_future_release(
      evl_task_create(evl_stream_loop(s), serve_page, &p, sizeof p));
}

/* [counted] the crawler */
EVL_TASK(crawl, t, crawl_state, c)
  EVL_AWAIT(t, evl_semaphore_hold(c->w->sem, t)); /* async with sem */
  EVL_AWAIT_SET(
      t, c->conn,
      evl_open_connection(evl_task_loop(t), "127.0.0.1", c->w->port, 0, NULL));
  c->len = snprintf(c->req, sizeof c->req, "GET /%d\n", c->page);
  evl_stream_write(c->conn, c->req, (size_t)c->len);
  EVL_AWAIT(t, evl_stream_read(c->conn, -1));
  c->w->pages++;
  for (c->link = (char *)((evl_bytes *)evl_await_result(t))->data;
       (c->link = strchr(c->link, '/')) != NULL; c->link++) {
    crawl_state next = {c->w, atoi(c->link + 1), 0, "", NULL, NULL};
    if (next.page < 0 || next.page >= PAGES || c->w->seen[next.page])
      continue;
    c->w->seen[next.page] = 1;
    evl_task_group_spawn(c->w->tg, crawl, &next, sizeof next);
  }
  EVL_FINALLY(t); /* writer.close(), however the task ends */
  evl_stream_free(c->conn);
EVL_TASK_END(t)

EVL_TASK(main_task, t, site, w)
  EVL_AWAIT_SET(t, w->server,
                evl_start_server(evl_task_loop(t), client_connected, NULL,
                                 "127.0.0.1", 0, 0, NULL));
  w->port = evl_server_port(w->server);
  w->sem = evl_semaphore_new_in(t, 3, 0);
  w->seen[0] = 1;
  w->tg = evl_task_group_new(evl_task_loop(t), t);
  w->first.w = w;
  evl_task_group_spawn(w->tg, crawl, &w->first, sizeof w->first);
  EVL_TASK_GROUP_END(t, w->tg);
  evl_server_close(w->server);
  EVL_AWAIT(t, evl_server_wait_closed(w->server));
  printf("%d pages\n", w->pages);
EVL_TASK_END(t)

int main(void) {
  return evl_run(main_task, NULL, sizeof(site), NULL, NULL) == 0 ? 0 : 1;
}
