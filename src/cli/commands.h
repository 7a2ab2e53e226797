#ifndef ENVICUTOR_COMMANDS_H
#define ENVICUTOR_COMMANDS_H

int cmd_sandbox(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_catalog(int argc, char **argv);

#endif
