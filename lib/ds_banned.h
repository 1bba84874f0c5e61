/*
 * ds_banned.h - functions libds and the tools must not use; included last by
 * every source file, it turns each use into a compile error. Use snprintf,
 * memcpy with explicit sizes, strtol/strtoull with checks, strtok_r.
 */
#ifndef DS_BANNED_H
#define DS_BANNED_H

#define DS_BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) DS_BANNED(strcpy)
#undef strcat
#define strcat(x, y) DS_BANNED(strcat)
#undef sprintf
#define sprintf(...) DS_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) DS_BANNED(vsprintf)
#undef strtok
#define strtok(x, y) DS_BANNED(strtok)
#undef atoi
#define atoi(x) DS_BANNED(atoi)

#endif
